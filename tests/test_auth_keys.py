"""Signing key fetching and caching against a local key server: refresh, cooldown, outages, removal."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.local_tokens import load_or_create_signing_key
from shared.auth import (
    SigningKeyCache,
    SigningKeysUnavailable,
    TokenValidator,
    authenticate,
    clear_signing_key_caches,
)
from shared.auth.keys import JwksFileSource, KeyFetchError, OpenIdJwksSource
from shared.errors import ServiceUnavailable, Unauthorized
from shared.settings import Settings, load_settings
from tests.auth_fixtures import (
    CACHE_SECONDS,
    CLIENT_ID,
    COOLDOWN_SECONDS,
    TENANT_ID,
    FakeClock,
    auth_settings,
    bearer,
    claims,
    hs256_with_public_key_token,
    primary_key,
    problem,
    published_jwks,
    rotated_key,
    stranger_key,
    token,
    unsigned_token,
)
from tests.jwks_server import JwksServer


@pytest.fixture(autouse=True)
def fresh_key_caches() -> Iterator[None]:
    clear_signing_key_caches()
    yield
    clear_signing_key_caches()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer(TENANT_ID) as running:
        running.publish(published_jwks(primary_key()))
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def validator_for(
    server: JwksServer,
    clock: FakeClock,
    *,
    grace_seconds: float = CACHE_SECONDS,
    timeout_seconds: float = 5.0,
) -> TokenValidator:
    """A validator whose key cache uses ``clock``; settings and source are the production ones."""
    settings = auth_settings(server.openid_config_url)
    cache = SigningKeyCache(
        OpenIdJwksSource(settings.auth_openid_config_url, timeout_seconds=timeout_seconds),
        cache_seconds=settings.auth_jwks_cache_seconds,
        refresh_cooldown_seconds=settings.auth_jwks_refresh_cooldown_seconds,
        stale_grace_seconds=grace_seconds,
        clock=clock,
    )
    return TokenValidator(settings, cache, clock=clock)


def fresh_token(clock: FakeClock, *, key_kid: str | None = None, signer: str = "primary") -> str:
    """A valid user token minted at the clock's time, signed by the named key."""
    key = {"primary": primary_key(), "rotated": rotated_key(), "stranger": stranger_key()}[signer]
    headers = {"kid": key_kid} if key_kid else None
    return token(claims(now=clock.time()), key=key, headers=headers)


def random_kid_token(clock: FakeClock) -> str:
    return fresh_token(clock, key_kid=uuid.uuid4().hex, signer="stranger")


async def test_new_kid_causes_one_refetch_then_accepted(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    await validator.authenticate(bearer(fresh_token(clock)), {})
    assert server.jwks_requests == 1

    server.publish(published_jwks(primary_key(), rotated_key()))
    clock.advance(COOLDOWN_SECONDS)
    identity = await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    await validator.authenticate(bearer(fresh_token(clock)), {})

    assert identity.tenant_id == TENANT_ID
    assert server.jwks_requests == 2
    assert server.config_requests == 2


async def test_new_kid_within_cooldown_waits_for_it(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    await validator.authenticate(bearer(fresh_token(clock)), {})
    server.publish(published_jwks(primary_key(), rotated_key()))

    clock.advance(COOLDOWN_SECONDS - 1)
    with pytest.raises(Unauthorized) as caught:
        await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    assert "unknown key" in caught.value.detail
    assert server.jwks_requests == 1

    clock.advance(1)
    await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    assert server.jwks_requests == 2


@pytest.mark.parametrize("outage", ["http_500", "unreachable"])
async def test_known_keys_survive_key_server_outage(server: JwksServer, clock: FakeClock, outage: str) -> None:
    validator = validator_for(server, clock)
    await validator.authenticate(bearer(fresh_token(clock)), {})

    clock.advance(CACHE_SECONDS)
    if outage == "http_500":
        server.error_status = 500
    else:
        server.stop()
    for _ in range(50):
        await validator.authenticate(bearer(fresh_token(clock)), {})
        clock.advance(1)
    await asyncio.gather(*(validator.authenticate(bearer(fresh_token(clock)), {}) for _ in range(50)))

    if outage == "http_500":
        # One fetch on first use, then one failed attempt for the whole cooldown.
        assert server.config_requests == 2
        assert server.jwks_requests == 1
        clock.advance(COOLDOWN_SECONDS)
        await validator.authenticate(bearer(fresh_token(clock)), {})
        assert server.config_requests == 3


async def test_stale_keys_give_503_after_grace_period(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock, grace_seconds=600)
    await validator.authenticate(bearer(fresh_token(clock)), {})
    server.error_status = 500

    clock.advance(CACHE_SECONDS + 599)
    await validator.authenticate(bearer(fresh_token(clock)), {})
    clock.advance(1)
    with pytest.raises(ServiceUnavailable) as caught:
        await validator.authenticate(bearer(fresh_token(clock)), {})

    status, body, headers = problem(caught.value)
    assert status == 503
    assert body["code"] == "signing_keys_unavailable"
    assert 1 <= int(headers["Retry-After"]) <= COOLDOWN_SECONDS
    assert "WWW-Authenticate" not in headers


async def test_random_kids_cause_one_fetch_per_cooldown(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    await validator.authenticate(bearer(fresh_token(clock)), {})
    clock.advance(COOLDOWN_SECONDS)

    for _ in range(100):
        with pytest.raises(Unauthorized):
            await validator.authenticate(bearer(random_kid_token(clock)), {})
    assert server.jwks_requests == 2

    clock.advance(COOLDOWN_SECONDS)
    results = await asyncio.gather(
        *(validator.authenticate(bearer(random_kid_token(clock)), {}) for _ in range(100)), return_exceptions=True
    )
    assert all(isinstance(result, Unauthorized) for result in results)
    assert server.jwks_requests == 3
    assert server.config_requests == 3

    await validator.authenticate(bearer(fresh_token(clock)), {})
    assert server.jwks_requests == 3


async def test_concurrent_requests_share_one_fetch(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    server.delay_seconds = 0.2

    identities = await asyncio.gather(*(validator.authenticate(bearer(fresh_token(clock)), {}) for _ in range(20)))

    assert len(identities) == 20
    assert server.config_requests == 1
    assert server.jwks_requests == 1


async def test_cancelled_request_leaves_shared_fetch_running(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    server.delay_seconds = 0.3

    first = asyncio.create_task(validator.authenticate(bearer(fresh_token(clock)), {}))
    await asyncio.sleep(0.05)
    first.cancel()
    identity = await validator.authenticate(bearer(fresh_token(clock)), {})

    assert identity.tenant_id == TENANT_ID
    assert first.cancelled()
    assert server.jwks_requests == 1


async def test_removed_key_rejected_after_cache_lifetime(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    server.publish(published_jwks(primary_key(), rotated_key()))
    await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    server.publish(published_jwks(primary_key()))

    clock.advance(CACHE_SECONDS - 1)
    await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    assert server.jwks_requests == 1

    clock.advance(1)
    with pytest.raises(Unauthorized) as caught:
        await validator.authenticate(bearer(fresh_token(clock, signer="rotated")), {})
    await validator.authenticate(bearer(fresh_token(clock)), {})

    assert "unknown key" in caught.value.detail
    assert server.jwks_requests == 2


async def test_hs256_and_alg_none_rejected_without_fetch(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    payload = claims(now=clock.time())
    confused = hs256_with_public_key_token(payload, primary_key())
    unsigned = unsigned_token({"alg": "none", "typ": "JWT", "kid": primary_key().kid}, payload, b"x")
    unsigned_empty = unsigned_token({"alg": "none", "typ": "JWT", "kid": primary_key().kid}, payload)

    for bad in (confused, unsigned, unsigned_empty):
        with pytest.raises(Unauthorized) as caught:
            await validator.authenticate(bearer(bad), {})
        status, body, headers = problem(caught.value)
        assert status == 401
        assert body["code"] == "invalid_token"
        assert headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert server.config_requests == 0


@pytest.mark.parametrize("missing", [("alg",), ("alg", "use")], ids=["no_alg", "no_alg_no_use"])
async def test_jwks_without_alg_loads(server: JwksServer, clock: FakeClock, missing: tuple[str, ...]) -> None:
    server.publish(published_jwks(primary_key(), without=missing))
    validator = validator_for(server, clock)

    identity = await validator.authenticate(bearer(fresh_token(clock)), {})

    assert identity.tenant_id == TENANT_ID


async def test_jwks_skips_unusable_keys(server: JwksServer, clock: FakeClock) -> None:
    usable = primary_key().public_jwk()
    ec_numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    unusable = [
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": str(ec_numbers.x), "y": str(ec_numbers.y)},
        {**rotated_key().public_jwk(), "use": "enc"},
        {**rotated_key().public_jwk(), "kid": "rs512", "alg": "RS512"},
        {**rotated_key().public_jwk(), "kid": "private", "d": "AQAB"},
        {**rotated_key().public_jwk(), "kid": "malformed", "n": "!!"},
        {key: value for key, value in rotated_key().public_jwk().items() if key != "kid"},
        "not an object",
    ]
    server.publish({"keys": [*unusable, usable]})
    validator = validator_for(server, clock)

    identity = await validator.authenticate(bearer(fresh_token(clock)), {})
    with pytest.raises(Unauthorized):
        await validator.authenticate(bearer(fresh_token(clock, signer="rotated", key_kid="private")), {})

    assert identity.tenant_id == TENANT_ID


@pytest.mark.parametrize(
    "document",
    [{"keys": []}, {"keys": [{"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}]}, {"no_keys": True}, ["keys"]],
    ids=["empty", "only_symmetric", "no_keys_member", "array"],
)
async def test_jwks_without_usable_keys_gives_503(server: JwksServer, clock: FakeClock, document: object) -> None:
    server.publish(document)
    validator = validator_for(server, clock)

    with pytest.raises(SigningKeysUnavailable):
        await validator.authenticate(bearer(fresh_token(clock)), {})


async def test_no_keys_gives_503_until_fetch_succeeds(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    server.error_status = 500

    with pytest.raises(SigningKeysUnavailable) as first:
        await validator.authenticate(bearer(fresh_token(clock)), {})
    clock.advance(100)
    with pytest.raises(SigningKeysUnavailable) as second:
        await validator.authenticate(bearer(fresh_token(clock)), {})

    assert first.value.headers["Retry-After"] == str(COOLDOWN_SECONDS)
    assert second.value.headers["Retry-After"] == str(COOLDOWN_SECONDS - 100)
    assert server.config_requests == 1

    server.error_status = None
    clock.advance(COOLDOWN_SECONDS - 100)
    identity = await validator.authenticate(bearer(fresh_token(clock)), {})
    assert identity.tenant_id == TENANT_ID
    assert server.config_requests == 2


async def test_key_fetch_does_not_block_event_loop(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock)
    server.delay_seconds = 0.5
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await validator.authenticate(bearer(fresh_token(clock)), {})
    finally:
        ticker.cancel()

    # Two slow requests of 0.5 s each; a blocked loop would tick at most once.
    assert ticks >= 20


async def test_slow_key_server_times_out_with_503(server: JwksServer, clock: FakeClock) -> None:
    validator = validator_for(server, clock, timeout_seconds=0.2)
    server.delay_seconds = 5.0

    started = time.monotonic()
    with pytest.raises(SigningKeysUnavailable):
        await validator.authenticate(bearer(fresh_token(clock)), {})
    elapsed = time.monotonic() - started

    assert elapsed < 2.0


async def test_jwks_uri_with_file_scheme_is_not_fetched(server: JwksServer, clock: FakeClock, tmp_path: Path) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(published_jwks(primary_key())))
    server.jwks_uri_override = jwks_file.as_uri()
    validator = validator_for(server, clock)

    with pytest.raises(SigningKeysUnavailable):
        await validator.authenticate(bearer(fresh_token(clock)), {})

    assert server.jwks_requests == 0


def local_settings(jwks_file: Path) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",
            "AUTH_TENANT_ID": TENANT_ID,
            "AUTH_CLIENT_ID": CLIENT_ID,
            "AUTH_KEY_SOURCE": "local",
            "AUTH_LOCAL_JWKS_FILE": str(jwks_file),
        }
    )


async def test_local_key_source_reads_jwks_file(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    settings = local_settings(key_dir / "jwks.json")
    early_token = token()

    with pytest.raises(SigningKeysUnavailable) as caught:
        await authenticate(bearer(early_token), {}, settings)
    local_key, created = load_or_create_signing_key(key_dir)
    identity = await authenticate(bearer(token(key=local_key)), {}, settings)
    with pytest.raises(Unauthorized):
        await authenticate(bearer(early_token), {}, settings)

    assert caught.value.headers["Retry-After"] == "1"
    assert created
    assert identity.tenant_id == TENANT_ID


async def test_local_jwks_file_not_json_gives_503(tmp_path: Path) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text("{not json")

    with pytest.raises(SigningKeysUnavailable):
        await authenticate(bearer(token()), {}, local_settings(jwks_file))


async def test_file_source_message_names_the_fix(tmp_path: Path) -> None:
    source = JwksFileSource(str(tmp_path / "missing.json"))

    with pytest.raises(KeyFetchError, match="run scripts/mint-token"):
        await source.fetch_jwks()
