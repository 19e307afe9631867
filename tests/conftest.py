"""Shared fixtures: a real PostgreSQL server, a fresh database per test, and settings for it."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from shared.settings import Settings, load_settings, reset_settings_cache

ROOT = Path(__file__).resolve().parent.parent
TENANT_ID = "11111111-1111-1111-1111-111111111111"
CLIENT_ID = "22222222-2222-2222-2222-222222222222"


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the PostgreSQL server the tests use: $DATABASE_URL, or one started by scripts/local-postgres."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    output = subprocess.run(
        [str(ROOT / "scripts" / "local-postgres")], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"DATABASE_URL=(\S+)", output)
    assert match, f"scripts/local-postgres printed no DATABASE_URL: {output!r}"
    return match.group(1)


def database_url_for(server_url: str, name: str) -> str:
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield database_url_for(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_environment(database_url: str) -> dict[str, str]:
    """Settings of a local run of the app against ``database_url``, with the local key source."""
    return {
        "DATABASE_URL": database_url,
        "AUTH_TENANT_ID": TENANT_ID,
        "AUTH_CLIENT_ID": CLIENT_ID,
        "AUTH_KEY_SOURCE": "local",
        "AUTH_LOCAL_JWKS_FILE": str(ROOT / ".local" / "jwks.json"),
        "MODEL_PROVIDER": "offline",
        "DATABASE_POOL_MAX_SIZE": "5",
    }


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(base_environment(database_url))


@pytest.fixture
async def app_environment(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, str]]:
    """Set the app's settings in os.environ for handler tests, and close the pool afterwards."""
    environment = base_environment(database_url)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    yield environment
    from shared.database import close_pool

    await close_pool()
    reset_settings_cache()
