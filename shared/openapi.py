"""The API's OpenAPI document, kept beside this module as openapi.json and served as is."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def load_openapi_document() -> dict[str, Any]:
    """Return the parsed OpenAPI document; it is read from the package once per worker."""
    text = resources.files("shared").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document
