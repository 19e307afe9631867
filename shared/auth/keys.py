"""Token signing keys: where they are fetched from, how they are parsed and how long they are trusted.

``SigningKeyCache`` keeps one worker's keys. It fetches at most once per refresh cooldown, whatever the
reason (first use, expired cache, a token with an unknown ``kid``), and concurrent requests share the
fetch that is in flight. When fetching fails it keeps serving the keys it has for a grace period, so an
outage of the key endpoint does not reject tokens signed with keys it already knows.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from jwt import PyJWK, PyJWTError

from shared.auth.errors import SigningKeysUnavailable

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 5.0
"""Socket timeout for each of the two requests (OpenID configuration, then JWKS) of one key fetch."""

_MAX_DOCUMENT_BYTES = 1_048_576


class Clock(Protocol):
    """Source of time, replaced in tests to move time forward without waiting."""

    def time(self) -> float:
        """Return seconds since the Unix epoch, for the exp, nbf and iat claims."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes back, for cache ages and cooldowns."""
        ...


class SystemClock:
    """The real clock: ``time.time`` and ``time.monotonic``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class KeyFetchError(Exception):
    """The JWKS could not be fetched, or the fetched document contains no usable signing key."""


class UnknownSigningKey(Exception):
    """No signing key has the token's ``kid``, even after the refresh the cooldown allowed."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no signing key with kid {kid!r}")
        self.kid = kid


class KeyProvider(Protocol):
    """Looks up the public key that verifies a token, by the ``kid`` in the token's header."""

    async def get_signing_key(self, kid: str) -> PyJWK:
        """Return the key for ``kid``; raise ``UnknownSigningKey`` or ``SigningKeysUnavailable``."""
        ...


class JwksSource(Protocol):
    """Place a JWKS document is read from."""

    @property
    def location(self) -> str:
        """URL or path of the source, for log messages."""
        ...

    async def fetch_jwks(self) -> object:
        """Return the parsed JWKS JSON document; raise ``KeyFetchError`` when it cannot be read."""
        ...


class OpenIdJwksSource:
    """Reads the JWKS whose address the tenant's OpenID configuration gives in ``jwks_uri``.

    Both requests run in a worker thread, so the event loop never waits on the network. Each request
    has a socket timeout of ``timeout_seconds``, and the whole fetch is abandoned after twice that plus
    one second.
    """

    def __init__(self, openid_config_url: str, *, timeout_seconds: float = FETCH_TIMEOUT_SECONDS) -> None:
        self._config_url = openid_config_url
        self._timeout = timeout_seconds

    @property
    def location(self) -> str:
        return self._config_url

    async def fetch_jwks(self) -> object:
        deadline = 2 * self._timeout + 1.0
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._fetch_blocking), timeout=deadline)
        except TimeoutError:
            raise KeyFetchError(f"fetching keys via {self._config_url} timed out after {deadline:g} s") from None

    def _fetch_blocking(self) -> object:
        config = _get_json(self._config_url, self._timeout)
        jwks_uri = config.get("jwks_uri") if isinstance(config, dict) else None
        if not isinstance(jwks_uri, str):
            raise KeyFetchError(f"OpenID configuration at {self._config_url} has no 'jwks_uri' string")

        # The configuration is trusted to name the key endpoint, but not to downgrade to plain HTTP
        # or to point at another kind of URL that urllib would open (file:, ftp:).
        scheme = urllib.parse.urlsplit(jwks_uri).scheme
        allowed_schemes = ("https",) if self._config_url.startswith("https:") else ("http", "https")
        if scheme not in allowed_schemes:
            raise KeyFetchError(f"OpenID configuration at {self._config_url} has an unusable jwks_uri {jwks_uri!r}")
        return _get_json(jwks_uri, self._timeout)


class JwksFileSource:
    """Reads a JWKS from a local file, for development with keys made by ``scripts/mint-token``."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    @property
    def location(self) -> str:
        return str(self._path)

    async def fetch_jwks(self) -> object:
        return await asyncio.to_thread(self._read_blocking)

    def _read_blocking(self) -> object:
        try:
            raw = self._path.read_bytes()
        except OSError as err:
            raise KeyFetchError(
                f"cannot read the JWKS file {str(self._path)!r} ({err.strerror}); run scripts/mint-token to create it"
            ) from None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise KeyFetchError(f"JWKS file {str(self._path)!r} is not valid JSON") from None


def _get_json(url: str, timeout: float) -> Any:
    # Only http(s) URLs get here: the settings check the configuration URL and _fetch_blocking the jwks_uri.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(_MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as err:
        err.close()
        raise KeyFetchError(f"GET {url} returned HTTP {err.code}") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        # URLError and socket timeouts are OSErrors; ValueError is an unusable URL.
        raise KeyFetchError(f"GET {url} failed: {err}") from None

    if len(body) > _MAX_DOCUMENT_BYTES:
        raise KeyFetchError(f"GET {url} returned more than {_MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise KeyFetchError(f"GET {url} returned a body that is not JSON") from None


def parse_jwks(document: object, location: str) -> dict[str, PyJWK]:
    """Return the RS256 signing keys of a JWKS document by ``kid``.

    Keys without an ``alg`` are taken as RS256 when they are RSA keys. Keys of another type or
    algorithm, encryption keys and malformed keys are skipped. A set with no usable key raises
    ``KeyFetchError``.
    """
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFetchError(f"JWKS from {location} has no 'keys' array")

    keys: dict[str, PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        usable = (
            isinstance(kid, str)
            and kid
            and entry.get("kty") == "RSA"
            and entry.get("use", "sig") == "sig"
            and entry.get("alg", "RS256") == "RS256"
        )
        if not usable:
            logger.debug("skipped a JWKS key from %s that is not an RS256 signing key with a kid", location)
            continue
        if "d" in entry:
            # A published private key is a leak at the source; using it would also break verification.
            logger.warning("skipped JWKS key %r from %s because it contains private key material", kid, location)
            continue
        if kid in keys:
            logger.warning("skipped a second JWKS key with kid %r from %s", kid, location)
            continue
        try:
            keys[str(kid)] = PyJWK(entry, algorithm="RS256")
        except PyJWTError as err:
            logger.warning("skipped malformed JWKS key %r from %s: %s", kid, location, type(err).__name__)

    if not keys:
        raise KeyFetchError(f"JWKS from {location} contains no RSA signing key usable with RS256")
    return keys


class SigningKeyCache:
    """Caches one source's signing keys in this worker process.

    - Keys younger than ``cache_seconds`` are used without fetching.
    - A fetch starts only when the previous one started at least ``refresh_cooldown_seconds`` ago, so
      tokens with random ``kid`` values cause at most one fetch per cooldown. A ``kid`` published
      within one cooldown of the last fetch is therefore unknown until the cooldown has passed.
    - Concurrent callers wait on the same fetch.
    - A successful fetch replaces the whole key set, so a key removed from the JWKS stops verifying
      tokens at the first fetch after it is removed (at the latest ``cache_seconds`` plus one cooldown).
    - After a failed fetch the old keys stay usable until they are ``cache_seconds +
      stale_grace_seconds`` old. With no usable keys, ``SigningKeysUnavailable`` (503) is raised.

    The in-flight fetch is an ``asyncio.Task`` of the loop that started it. A caller on another loop
    ignores it and may start its own, which only happens when a process runs several event loops
    one after another (as tests do).
    """

    def __init__(
        self,
        source: JwksSource,
        *,
        cache_seconds: float,
        refresh_cooldown_seconds: float,
        stale_grace_seconds: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._source = source
        self._cache_seconds = cache_seconds
        self._cooldown_seconds = refresh_cooldown_seconds
        self._grace_seconds = stale_grace_seconds
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at: float | None = None
        self._fetch_started_at: float | None = None
        self._fetch_task: asyncio.Task[None] | None = None

    async def get_signing_key(self, kid: str) -> PyJWK:
        """Return the key for ``kid``, fetching the JWKS first when it is stale or lacks ``kid``.

        Raises ``UnknownSigningKey`` when usable keys exist but none has ``kid``, and
        ``SigningKeysUnavailable`` when there are no usable keys at all.
        """
        now = self._clock.monotonic()
        if self._is_fresh(now) and kid in self._keys:
            return self._keys[kid]

        await self._refresh(now, self._refresh_reason(now))

        now = self._clock.monotonic()
        if not self._is_usable(now):
            raise SigningKeysUnavailable(
                "signing keys to check the token are unavailable; try again later",
                retry_after_seconds=self._seconds_until_next_fetch(now),
            )
        key = self._keys.get(kid)
        if key is None:
            raise UnknownSigningKey(kid)
        return key

    def _is_fresh(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at < self._cache_seconds

    def _is_usable(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at < self._cache_seconds + self._grace_seconds

    def _refresh_reason(self, now: float) -> str:
        if self._loaded_at is None:
            return "no keys loaded yet"
        if self._is_fresh(now):
            return "no key with the token's kid"
        return "cached keys expired"

    def _seconds_until_next_fetch(self, now: float) -> int:
        if self._fetch_started_at is None:
            return 1
        return int(self._fetch_started_at + self._cooldown_seconds - now + 0.999)

    async def _refresh(self, now: float, reason: str) -> None:
        """Wait for the fetch in flight, or start one if the cooldown allows; return at once otherwise."""
        task = self._fetch_task
        if task is not None and (task.done() or task.get_loop() is not asyncio.get_running_loop()):
            task = None

        if task is None:
            if self._fetch_started_at is not None and now - self._fetch_started_at < self._cooldown_seconds:
                since = now - self._fetch_started_at
                logger.debug("not fetching signing keys (%s): the last fetch started %.0f s ago", reason, since)
                return
            # No await between the check above and these assignments, so only one caller starts a fetch.
            self._fetch_started_at = now
            task = asyncio.get_running_loop().create_task(self._fetch(reason))
            self._fetch_task = task

        # shield: a caller that is cancelled (client gone, timeout) must not cancel the shared fetch.
        await asyncio.shield(task)

    async def _fetch(self, reason: str) -> None:
        location = self._source.location
        logger.info("fetching signing keys from %s (%s)", location, reason)
        try:
            document = await self._source.fetch_jwks()
            keys = parse_jwks(document, location)
        except KeyFetchError as err:
            self._log_fetch_failure(err)
            return

        self._keys = keys
        self._loaded_at = self._clock.monotonic()
        logger.info("loaded %d signing keys from %s: %s", len(keys), location, ", ".join(sorted(keys)))

    def _log_fetch_failure(self, err: KeyFetchError) -> None:
        now = self._clock.monotonic()
        if self._loaded_at is not None and self._is_usable(now):
            logger.warning(
                "fetching signing keys failed: %s; keeping %d keys loaded %.0f s ago, next try in %.0f s or later",
                err,
                len(self._keys),
                now - self._loaded_at,
                self._cooldown_seconds,
            )
        else:
            logger.warning(
                "fetching signing keys failed: %s; no usable keys, so tokens get 503 until a fetch succeeds "
                "(next try in %.0f s or later)",
                err,
                self._cooldown_seconds,
            )
