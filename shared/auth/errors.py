"""Authentication and authorization failures, each with its RFC 6750 ``WWW-Authenticate`` challenge.

The set is small on purpose: no token (401, challenge without an error code), a rejected token (401,
``invalid_token``), a valid token without the needed permission (403, ``insufficient_scope``) and no
signing keys to check tokens with (503). See https://www.rfc-editor.org/rfc/rfc6750#section-3.
"""

from __future__ import annotations

import re

from shared.errors import Forbidden, ServiceUnavailable, Unauthorized

# RFC 6750 allows only these characters inside error_description and scope values.
_CHALLENGE_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    return '"' + _CHALLENGE_UNSAFE.sub("?", value) + '"'


class MissingToken(Unauthorized):
    """The request carries no bearer token (no Authorization header, or another scheme such as Basic)."""

    code = "missing_token"
    title = "Authentication required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class InvalidToken(Unauthorized):
    """The request carries a bearer token that is malformed, badly signed, expired or meant for someone else.

    ``reason`` is a short fixed word for logs and tests (``expired``, ``audience``, ...). ``detail`` is the
    sentence the client receives, and it never contains the token.
    """

    code = "invalid_token"
    title = "Invalid token"

    def __init__(self, detail: str, *, reason: str) -> None:
        challenge = f'Bearer error="invalid_token", error_description={_quoted(detail)}'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
        self.reason = reason


class InsufficientScope(Forbidden):
    """The token is valid but carries neither the delegated scope nor the app role the endpoint needs."""

    code = "insufficient_scope"
    title = "Insufficient scope"

    def __init__(self, detail: str, *, scope: str) -> None:
        challenge = f'Bearer error="insufficient_scope", error_description={_quoted(detail)}'
        if scope:
            challenge += f", scope={_quoted(scope)}"
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class SigningKeysUnavailable(ServiceUnavailable):
    """No signing keys could be loaded, so no token can be checked; the client may retry later."""

    code = "signing_keys_unavailable"
    title = "Signing keys unavailable"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))})
        self.retry_after_seconds = max(1, retry_after_seconds)
