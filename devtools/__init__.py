"""Tools for working on the app locally (tokens, a local host); not part of the deployed package."""
