"""Auth through the registered HTTP functions: status, problem body and challenge as a client gets them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_tokens import SigningKey, build_claims, load_or_create_signing_key, sign_token
from shared.auth import clear_signing_key_caches
from shared.settings import reset_settings_cache
from tests.apphost import call_function, response_json
from tests.auth_fixtures import CLIENT_ID, TENANT_ID


@pytest.fixture
def local_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SigningKey]:
    """App settings with the local key source. The requests here end at the auth checks, before any database use."""
    key, _ = load_or_create_signing_key(tmp_path)
    environment = {
        "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",
        "AUTH_TENANT_ID": TENANT_ID,
        "AUTH_CLIENT_ID": CLIENT_ID,
        "AUTH_KEY_SOURCE": "local",
        "AUTH_LOCAL_JWKS_FILE": str(tmp_path / "jwks.json"),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    clear_signing_key_caches()
    yield key
    reset_settings_cache()
    clear_signing_key_caches()


async def test_invoke_without_token_gets_bare_challenge(local_key: SigningKey) -> None:
    response = await call_function(
        "invoke_thread", method="POST", route_params={"threadId": "t1"}, body={"message": "hi"}
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == "application/problem+json"
    assert response_json(response)["code"] == "missing_token"


async def test_expired_token_gets_invalid_token(local_key: SigningKey) -> None:
    expired = sign_token(build_claims(lifetime_seconds=-120), local_key)

    response = await call_function(
        "get_thread", route_params={"threadId": "t1"}, headers={"Authorization": f"Bearer {expired}"}
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response_json(response)["detail"] == "bearer token has expired"


async def test_token_in_query_gets_401(local_key: SigningKey) -> None:
    valid = sign_token(build_claims(), local_key)

    response = await call_function("list_threads", params={"access_token": valid})

    assert response.status_code == 401
    assert valid not in response.get_body().decode()
    assert "not in the URL" in response_json(response)["detail"]


async def test_missing_scope_gets_403_before_body_checks(local_key: SigningKey) -> None:
    no_scope = sign_token(build_claims(scopes=[], roles=[]), local_key)

    response = await call_function(
        "invoke_thread",
        method="POST",
        route_params={"threadId": "t1"},
        raw_body=b"not json",
        headers={"Authorization": f"Bearer {no_scope}"},
    )

    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
    assert response_json(response)["code"] == "insufficient_scope"


async def test_analytics_needs_the_analytics_role(local_key: SigningKey) -> None:
    user_without_role = sign_token(build_claims(roles=[]), local_key)

    response = await call_function("agent_usage_summary", headers={"Authorization": f"Bearer {user_without_role}"})

    assert response.status_code == 403
    assert "Analytics.Read" in response_json(response)["detail"]


async def test_missing_jwks_file_gets_503(local_key: SigningKey, tmp_path: Path) -> None:
    (tmp_path / "jwks.json").unlink()
    valid = sign_token(build_claims(), local_key)

    response = await call_function(
        "get_thread", route_params={"threadId": "t1"}, headers={"Authorization": f"Bearer {valid}"}
    )

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response_json(response)["code"] == "signing_keys_unavailable"


async def test_health_needs_no_token(local_key: SigningKey) -> None:
    response = await call_function("health")

    assert response.status_code == 200
