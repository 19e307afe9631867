"""Bearer token extraction and the structural checks that run before any key lookup or cryptography.

Everything here is cheap string work, so a malformed or oversized token is rejected without touching
the signing keys (and so without a chance to trigger a key fetch).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from shared.auth.errors import InvalidToken, MissingToken

MAX_TOKEN_BYTES = 16_384
"""Largest Authorization header accepted. An Entra token with 200 group ids, the most it carries before
the groups claim is replaced by an overage link, is about 11 KB once encoded (an estimate)."""

ACCEPTED_ALGORITHM = "RS256"

# A JWS in compact serialization: three non-empty base64url segments without padding (RFC 7515 section 7.1).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_KID_CHARS = 256
# Header parameters that change how a JWS must be processed; no Entra access token uses them.
_UNSUPPORTED_HEADER_PARAMETERS = ("crit", "b64", "jku", "x5u", "jwk")


def extract_bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """Return the bearer token from the Authorization header, after checking its size and shape.

    Raises ``MissingToken`` when no Bearer credentials were sent and ``InvalidToken`` when a token is
    in the query string, when the header contains anything but exactly one token, or when that token is
    larger than ``MAX_TOKEN_BYTES`` or not three base64url segments.
    """
    if "access_token" in query:
        # Tokens in URLs end up in access logs, browser history and Referer headers (RFC 6750 section 2.3).
        raise InvalidToken(
            "access tokens must be sent in the Authorization header, not in the URL", reason="token_in_query"
        )

    value = _get_header(headers, "authorization")
    if value is None:
        raise MissingToken("request needs a bearer token in the Authorization header")
    if len(value) > MAX_TOKEN_BYTES:
        raise InvalidToken(f"Authorization header must be at most {MAX_TOKEN_BYTES} bytes", reason="too_large")

    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        if _COMPACT_JWS.fullmatch(value.strip()):
            raise InvalidToken(
                "Authorization header has a token without the 'Bearer' scheme before it", reason="no_scheme"
            )
        # RFC 6750 section 3.1: a request that used another scheme gets a challenge without an error code.
        raise MissingToken("Authorization header must use the Bearer scheme")

    token = credentials.strip()
    if not token:
        raise InvalidToken("Authorization header has no token after 'Bearer'", reason="empty")
    if any(character.isspace() for character in token):
        raise InvalidToken("Authorization header must contain exactly one token after 'Bearer'", reason="several")
    if not _COMPACT_JWS.fullmatch(token):
        raise InvalidToken(
            "bearer token must be a JWT of three base64url segments separated by dots", reason="malformed"
        )
    return token


def read_key_id(token: str) -> str:
    """Return the ``kid`` of a token's JOSE header after checking that the header names RS256.

    Raises ``InvalidToken`` for a header that is not a base64url JSON object, names another algorithm
    (``none``, HS256, RS512, ES256, ...), lacks a ``kid`` or uses parameters this API does not support.
    """
    header = _decode_header(token)

    algorithm = header.get("alg")
    if algorithm is None:
        raise InvalidToken("bearer token header has no 'alg'", reason="algorithm")
    if algorithm != ACCEPTED_ALGORITHM:
        raise InvalidToken(
            f"bearer token must be signed with {ACCEPTED_ALGORITHM}, got {_shorten(algorithm)}", reason="algorithm"
        )

    token_type = header.get("typ")
    if token_type is not None and (not isinstance(token_type, str) or token_type.upper() != "JWT"):
        raise InvalidToken(f"bearer token type must be JWT, got {_shorten(token_type)}", reason="type")

    for parameter in _UNSUPPORTED_HEADER_PARAMETERS:
        if parameter in header:
            raise InvalidToken(
                f"bearer token header parameter '{parameter}' is not supported", reason="header_parameter"
            )

    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
        raise InvalidToken("bearer token header has no valid 'kid' (key id)", reason="kid")
    return kid


def _decode_header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise InvalidToken("bearer token header is not a base64url-encoded JSON object", reason="header")
    return header


def _get_header(headers: Mapping[str, str], name: str) -> str | None:
    # azure.functions headers are case-insensitive already; a plain dict (tests, other callers) is not.
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _shorten(value: object) -> str:
    """Quote a client-supplied value for a message, cut to a few characters so it cannot carry a token."""
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > 20:
        text = text[:20] + "..."
    return "'" + text + "'"
