"""scripts/mint-token and devtools.local_tokens: tokens they make are accepted by the app's own checks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from devtools.local_tokens import (
    DEFAULT_CLIENT_APP_ID,
    DEFAULT_OBJECT_ID,
    EXAMPLE_CLIENT_ID,
    EXAMPLE_TENANT_ID,
    build_claims,
    load_or_create_signing_key,
    sign_token,
)
from shared.auth import (
    InsufficientScope,
    authenticate,
    clear_signing_key_caches,
    require_analytics_access,
    require_conversation_access,
)
from shared.errors import Unauthorized
from shared.settings import Settings, load_settings
from tests.auth_fixtures import GRAPH_APP_ID, OTHER_TENANT_ID, bearer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mint-token"


@pytest.fixture(autouse=True)
def fresh_key_caches() -> Iterator[None]:
    clear_signing_key_caches()
    yield
    clear_signing_key_caches()


def example_settings(key_dir: Path, **overrides: str) -> Settings:
    """The settings of the example local configuration, with the JWKS file in ``key_dir``."""
    return load_settings(
        {
            "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",
            "AUTH_TENANT_ID": EXAMPLE_TENANT_ID,
            "AUTH_CLIENT_ID": EXAMPLE_CLIENT_ID,
            "AUTH_KEY_SOURCE": "local",
            "AUTH_LOCAL_JWKS_FILE": str(key_dir / "jwks.json"),
            **overrides,
        }
    )


def mint(key_dir: Path, *arguments: str, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AUTH_")}
    return subprocess.run(
        [*(command or [sys.executable, str(SCRIPT)]), "--key-dir", str(key_dir), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def minted_token(key_dir: Path, *arguments: str) -> str:
    result = mint(key_dir, *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_default_token_accepted_with_example_settings(tmp_path: Path) -> None:
    settings = example_settings(tmp_path)

    identity = await authenticate(bearer(minted_token(tmp_path)), {}, settings)

    assert identity.owner_key == f"{EXAMPLE_TENANT_ID}/user/{DEFAULT_OBJECT_ID}"
    assert identity.scopes == frozenset({"Conversations.ReadWrite"})
    assert identity.roles == frozenset({"Analytics.Read"})
    require_conversation_access(identity, settings)
    require_analytics_access(identity, settings)


def test_key_pair_created_once_and_private(tmp_path: Path) -> None:
    first = mint(tmp_path)
    second = mint(tmp_path)

    assert first.returncode == 0
    assert "created a signing key" in first.stderr
    assert "created" not in second.stderr
    assert (
        jwt.get_unverified_header(first.stdout.strip())["kid"]
        == jwt.get_unverified_header(second.stdout.strip())["kid"]
    )
    assert stat.S_IMODE((tmp_path / "signing-key.pem").stat().st_mode) == 0o600
    assert (tmp_path / "jwks.json").exists()


def test_script_runs_directly_from_a_shell(tmp_path: Path) -> None:
    result = mint(tmp_path, command=[str(SCRIPT)])

    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2


async def test_expired_token_rejected(tmp_path: Path) -> None:
    expired = minted_token(tmp_path, "--lifetime", "-60")

    with pytest.raises(Unauthorized) as caught:
        await authenticate(bearer(expired), {}, example_settings(tmp_path))

    assert "expired" in caught.value.detail


async def test_app_token_identifies_the_client_app(tmp_path: Path) -> None:
    settings = example_settings(tmp_path)

    identity = await authenticate(bearer(minted_token(tmp_path, "--kind", "app")), {}, settings)

    assert identity.is_app_only
    assert identity.owner_key == f"{EXAMPLE_TENANT_ID}/app/{DEFAULT_CLIENT_APP_ID}"
    require_conversation_access(identity, settings)
    require_analytics_access(identity, settings)


async def test_token_without_permissions_gets_403(tmp_path: Path) -> None:
    settings = example_settings(tmp_path)

    identity = await authenticate(bearer(minted_token(tmp_path, "--scopes", "", "--roles", "")), {}, settings)

    with pytest.raises(InsufficientScope):
        require_conversation_access(identity, settings)
    with pytest.raises(InsufficientScope):
        require_analytics_access(identity, settings)


async def test_v1_token_needs_v1_enabled(tmp_path: Path) -> None:
    v1 = minted_token(tmp_path, "--token-version", "1")

    identity = await authenticate(bearer(v1), {}, example_settings(tmp_path, AUTH_ACCEPT_V1_TOKENS="true"))
    with pytest.raises(Unauthorized):
        await authenticate(bearer(v1), {}, example_settings(tmp_path))

    assert identity.client_app_id == DEFAULT_CLIENT_APP_ID
    assert jwt.decode(v1, options={"verify_signature": False})["aud"] == f"api://{EXAMPLE_CLIENT_ID}"


@pytest.mark.parametrize(
    ("arguments", "accepted"),
    [
        pytest.param(("--audience", f"api://{EXAMPLE_CLIENT_ID}"), True, id="app_id_uri"),
        pytest.param(("--audience", GRAPH_APP_ID), False, id="graph"),
        pytest.param(("--tenant", OTHER_TENANT_ID), False, id="other_tenant"),
        pytest.param(("--object-id", OTHER_TENANT_ID, "--roles", "Conversations.ReadWrite.All"), True, id="ids"),
    ],
)
async def test_options_change_the_token(tmp_path: Path, arguments: tuple[str, ...], accepted: bool) -> None:
    minted = minted_token(tmp_path, *arguments)

    if accepted:
        identity = await authenticate(bearer(minted), {}, example_settings(tmp_path))
        assert identity.tenant_id == EXAMPLE_TENANT_ID
        return
    with pytest.raises(Unauthorized):
        await authenticate(bearer(minted), {}, example_settings(tmp_path))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(("--tenant", "contoso"), "must be a GUID", id="tenant_not_guid"),
        pytest.param(("--kind", "app", "--scopes", "Conversations.ReadWrite"), "no scopes", id="app_with_scopes"),
        pytest.param(("--lifetime", "0"), "must not be 0", id="zero_lifetime"),
        pytest.param(("--token-version", "3"), "invalid choice", id="unknown_version"),
    ],
)
def test_bad_options_exit_with_usage_error(tmp_path: Path, arguments: tuple[str, ...], message: str) -> None:
    result = mint(tmp_path, *arguments)

    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


async def test_jwks_rewritten_when_missing(tmp_path: Path) -> None:
    key, created = load_or_create_signing_key(tmp_path)
    (tmp_path / "jwks.json").unlink()

    again, created_again = load_or_create_signing_key(tmp_path)
    identity = await authenticate(bearer(sign_token(build_claims(), key)), {}, example_settings(tmp_path))

    assert created
    assert not created_again
    assert again.kid == key.kid
    assert identity.tenant_id == EXAMPLE_TENANT_ID
