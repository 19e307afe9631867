"""Request authentication: from the Authorization header to a validated caller Identity."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt

from shared.auth.bearer import ACCEPTED_ALGORITHM, extract_bearer_token, read_key_id
from shared.auth.claims import check_issuer, check_token_times, identity_from_claims
from shared.auth.errors import InvalidToken, MissingToken
from shared.auth.identity import Identity
from shared.auth.keys import (
    SYSTEM_CLOCK,
    Clock,
    JwksFileSource,
    JwksSource,
    KeyProvider,
    OpenIdJwksSource,
    SigningKeyCache,
    UnknownSigningKey,
)
from shared.settings import Settings

logger = logging.getLogger(__name__)

# PyJWT checks presence of these; their values are checked in shared.auth.claims.
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "tid", "ver"]


class TokenValidator:
    """Validates the bearer token of one request against the settings and a key provider.

    Checks run cheapest first: the header and token shape, then the JOSE header (RS256 only, a ``kid``),
    then the key lookup, the signature and the claims. Nothing that fails an earlier step reaches the
    key provider, so malformed tokens cannot cause key fetches.
    """

    def __init__(self, settings: Settings, keys: KeyProvider, clock: Clock = SYSTEM_CLOCK) -> None:
        self._settings = settings
        self._keys = keys
        self._clock = clock

    async def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Identity:
        """Return the Identity of a valid token; raise ``MissingToken`` or ``InvalidToken`` (401).

        Raises ``SigningKeysUnavailable`` (503) when no signing keys can be loaded. Each rejection is
        logged with its reason, and with the token's ``tid`` and ``oid`` once its signature is verified.
        """
        verified_claims: dict[str, Any] | None = None
        try:
            token = extract_bearer_token(headers, query)
            kid = read_key_id(token)
            key = await self._get_signing_key(kid)
            verified_claims = self._decode(token, key)
            check_token_times(verified_claims, self._clock.time(), self._settings.auth_leeway_seconds)
            tenant_id = check_issuer(verified_claims, self._settings)
            return identity_from_claims(verified_claims, tenant_id)
        except MissingToken as err:
            logger.info("request has no bearer token: %s", err.detail)
            raise
        except InvalidToken as err:
            _log_rejected(err, verified_claims)
            raise

    async def _get_signing_key(self, kid: str) -> jwt.PyJWK:
        try:
            return await self._keys.get_signing_key(kid)
        except UnknownSigningKey:
            raise InvalidToken("bearer token is signed with an unknown key", reason="unknown_kid") from None

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        audiences = [self._settings.auth_client_id, self._settings.auth_app_id_uri]
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ACCEPTED_ALGORITHM],
                audience=audiences,
                options={
                    "require": _REQUIRED_CLAIMS,
                    # Times use this validator's clock and the issuer depends on tid; see shared.auth.claims.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("bearer token signature is invalid", reason="signature") from None
        except jwt.MissingRequiredClaimError as err:
            raise InvalidToken(f"bearer token is missing the '{err.claim}' claim", reason="missing_claim") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(
                f"bearer token audience must be '{audiences[0]}' or '{audiences[1]}'", reason="audience"
            ) from None
        except jwt.DecodeError:
            raise InvalidToken("bearer token segments do not decode to a JWT", reason="decode") from None
        except jwt.PyJWTError as err:
            # Remaining PyJWT failures (a key below 2048 bits, a malformed sub or jti) have fixed messages.
            raise InvalidToken("bearer token is invalid", reason=type(err).__name__) from None


def _log_rejected(err: InvalidToken, verified_claims: Mapping[str, Any] | None) -> None:
    if verified_claims is None:
        logger.warning("rejected bearer token (%s): %s", err.reason, err.detail)
        return
    logger.warning(
        "rejected bearer token (%s): %s (tid=%s oid=%s)",
        err.reason,
        err.detail,
        _loggable(verified_claims.get("tid")),
        _loggable(verified_claims.get("oid")),
    )


def _loggable(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


_key_caches: dict[tuple[object, ...], SigningKeyCache] = {}


def signing_keys_for(settings: Settings) -> SigningKeyCache:
    """Return this worker's key cache for the key source in ``settings``, creating it on first use.

    Entra keys come from the OpenID configuration and follow the cache and cooldown settings. While
    fetching fails, stale keys stay usable for one more cache lifetime. Local keys are read from the JWKS
    file with no cooldown, so a key made by ``scripts/mint-token`` after the host started is found at once.
    """
    source: JwksSource
    if settings.auth_key_source == "local":
        cache_key: tuple[object, ...] = ("local", settings.auth_local_jwks_file, settings.auth_jwks_cache_seconds)
        cooldown = 0
    else:
        cache_key = (
            "entra",
            settings.auth_openid_config_url,
            settings.auth_jwks_cache_seconds,
            settings.auth_jwks_refresh_cooldown_seconds,
        )
        cooldown = settings.auth_jwks_refresh_cooldown_seconds

    cache = _key_caches.get(cache_key)
    if cache is not None:
        return cache

    if settings.auth_key_source == "local":
        source = JwksFileSource(settings.auth_local_jwks_file)
    else:
        source = OpenIdJwksSource(settings.auth_openid_config_url)
    cache = SigningKeyCache(
        source,
        cache_seconds=settings.auth_jwks_cache_seconds,
        refresh_cooldown_seconds=cooldown,
        stale_grace_seconds=settings.auth_jwks_cache_seconds,
    )
    _key_caches[cache_key] = cache
    return cache


def clear_signing_key_caches() -> None:
    """Forget every cached key set, so the next request fetches again (tests use this)."""
    _key_caches.clear()


async def authenticate(headers: Mapping[str, str], query: Mapping[str, str], settings: Settings) -> Identity:
    """Return the caller's Identity from the request's bearer token.

    ``headers`` are the request headers (looked up case-insensitively) and ``query`` the query
    parameters. Raises ``MissingToken`` or ``InvalidToken`` (both ``Unauthorized``, 401, with a
    ``WWW-Authenticate`` challenge) and ``SigningKeysUnavailable`` (``ServiceUnavailable``, 503, with
    ``Retry-After``). Key fetches run in a worker thread, so the event loop is never blocked.
    """
    return await TokenValidator(settings, signing_keys_for(settings)).authenticate(headers, query)
