"""Authentication (Entra ID bearer tokens checked with PyJWT) and authorization (scopes and app roles).

Handlers call ``authenticate`` and then one ``require_…`` function; everything else here is for tests
and tools.
"""

from __future__ import annotations

from shared.auth.errors import InsufficientScope, InvalidToken, MissingToken, SigningKeysUnavailable
from shared.auth.identity import Identity, require_analytics_access, require_conversation_access
from shared.auth.keys import Clock, KeyProvider, SigningKeyCache
from shared.auth.validation import TokenValidator, authenticate, clear_signing_key_caches, signing_keys_for

__all__ = [
    "Clock",
    "Identity",
    "InsufficientScope",
    "InvalidToken",
    "KeyProvider",
    "MissingToken",
    "SigningKeyCache",
    "SigningKeysUnavailable",
    "TokenValidator",
    "authenticate",
    "clear_signing_key_caches",
    "require_analytics_access",
    "require_conversation_access",
    "signing_keys_for",
]
