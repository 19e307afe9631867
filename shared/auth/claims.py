"""Checks on the claims of a token whose signature is already verified, and the Identity built from them.

PyJWT checks the signature, the audience and that required claims are present. The checks here cover
what depends on Entra ID's conventions (token versions, per-tenant issuers, ``scp`` and ``roles``) and
the token times, which use this module's clock so tests can move it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from shared.auth.errors import InvalidToken
from shared.auth.identity import Identity
from shared.settings import Settings

V2_ISSUER = "https://login.microsoftonline.com/{tenant}/v2.0"
V1_ISSUER = "https://sts.windows.net/{tenant}/"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check_token_times(claims: Mapping[str, Any], now: float, leeway_seconds: float) -> None:
    """Raise ``InvalidToken`` when the token has expired, is not valid yet, or was issued in the future.

    ``exp`` and ``iat`` are required and ``nbf`` is checked when present. Each must be a number of
    seconds since the epoch, and each comparison allows ``leeway_seconds`` of clock skew.
    """
    expires = _time_claim(claims, "exp")
    issued = _time_claim(claims, "iat")
    not_before = _time_claim(claims, "nbf") if "nbf" in claims else None

    if expires <= now - leeway_seconds:
        raise InvalidToken("bearer token has expired", reason="expired")
    if not_before is not None and not_before > now + leeway_seconds:
        raise InvalidToken("bearer token is not valid yet (nbf is in the future)", reason="not_yet_valid")
    if issued > now + leeway_seconds:
        raise InvalidToken("bearer token was issued in the future (iat)", reason="issued_in_future")


def check_issuer(claims: Mapping[str, Any], settings: Settings) -> str:
    """Return the token's tenant id after checking its version, its issuer and the tenant allow-list.

    A v2.0 token must come from ``https://login.microsoftonline.com/<tid>/v2.0``. A v1.0 token is
    accepted only when ``auth_accept_v1_tokens`` is on, and must come from ``https://sts.windows.net/<tid>/``.
    """
    tenant = _guid_claim(claims, "tid")
    if tenant is None:
        raise InvalidToken("bearer token is missing the 'tid' claim", reason="missing_claim")
    if tenant.lower() not in settings.auth_allowed_tenants:
        raise InvalidToken("bearer token was issued by a tenant this API does not accept", reason="tenant")

    version = claims.get("ver")
    if version == "2.0":
        expected_issuer = V2_ISSUER.format(tenant=tenant)
    elif version == "1.0" and settings.auth_accept_v1_tokens:
        expected_issuer = V1_ISSUER.format(tenant=tenant)
    elif version == "1.0":
        raise InvalidToken("bearer token is a v1.0 token but this API accepts only v2.0 tokens", reason="version")
    else:
        raise InvalidToken("bearer token claim 'ver' must be '2.0'", reason="version")

    if claims.get("iss") != expected_issuer:
        raise InvalidToken(f"bearer token issuer must be '{expected_issuer}'", reason="issuer")
    return tenant.lower()


def identity_from_claims(claims: Mapping[str, Any], tenant_id: str) -> Identity:
    """Build the caller's Identity; raise ``InvalidToken`` when the claims that identify it are missing.

    A token with an ``scp`` claim is delegated and needs ``oid``. A token without one is app-only
    and needs the client application id (``azp`` in v2.0 tokens, ``appid`` in v1.0 tokens).
    """
    client_claim = "appid" if claims.get("ver") == "1.0" else "azp"
    object_id = _guid_claim(claims, "oid")
    client_app_id = _guid_claim(claims, client_claim)
    is_app_only = "scp" not in claims

    if is_app_only and client_app_id is None:
        raise InvalidToken(
            f"bearer token has neither 'scp' nor '{client_claim}', so it names no user and no application",
            reason="missing_claim",
        )
    if not is_app_only and object_id is None:
        raise InvalidToken("bearer token for a user is missing the 'oid' claim", reason="missing_claim")

    return Identity(
        tenant_id=tenant_id,
        object_id=object_id.lower() if object_id else None,
        client_app_id=client_app_id.lower() if client_app_id else None,
        is_app_only=is_app_only,
        scopes=frozenset(_scopes(claims)),
        roles=frozenset(_roles(claims)),
    )


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if value is None:
        raise InvalidToken(f"bearer token is missing the '{name}' claim", reason="missing_claim")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidToken(f"bearer token claim '{name}' must be a number of seconds", reason="claim_type")
    return float(value)


def _guid_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _GUID.match(value):
        raise InvalidToken(f"bearer token claim '{name}' must be a GUID", reason="claim_type")
    return value


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get("scp", "")
    if not isinstance(value, str):
        raise InvalidToken("bearer token claim 'scp' must be a space-separated string", reason="claim_type")
    return value.split()


def _roles(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get("roles", [])
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise InvalidToken("bearer token claim 'roles' must be an array of strings", reason="claim_type")
    return value
