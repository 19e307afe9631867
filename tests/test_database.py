"""The worker's pool and schema set-up, against a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shared.database import (
    SchemaSetupError,
    apply_schema,
    close_pool,
    get_pool,
    load_checkpointer_migrations,
    load_migrations,
)
from shared.errors import DatabaseUnavailable
from shared.settings import Settings, load_settings
from tests.conftest import base_environment

ROOT = Path(__file__).resolve().parent.parent

COLD_WORKER = r"""
import asyncio, sys, time
from shared.conversations import run_turn
from shared.settings import get_settings

start_at = float(sys.argv[1])
async def main():
    # Both workers wake at the same instant, as two cold instances scaled out at once would.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    result = await run_turn(get_settings(), "tenant/user/cold", sys.argv[2], message="what is 3 + 4?")
    print(result.status)
asyncio.run(main())
"""


def test_two_cold_workers_on_empty_database_both_start(database_url: str) -> None:
    environment = {**os.environ, **base_environment(database_url)}
    start_at = f"{time.time() + 2.0:.3f}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", COLD_WORKER, start_at, f"cold-{n}"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [worker.communicate(timeout=60) for worker in workers]

    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
        assert stdout.strip() == "completed"
    with psycopg.connect(database_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM app_schema_migrations ORDER BY version")]
        checkpointer_versions = conn.execute("SELECT count(*), count(DISTINCT v) FROM checkpoint_migrations").fetchone()
        threads = conn.execute("SELECT count(*) FROM threads").fetchone()
    assert versions == [m.version for m in load_migrations()]
    assert checkpointer_versions is not None and checkpointer_versions[0] == checkpointer_versions[1]
    assert threads == (2,)


async def test_pool_without_autocommit_is_refused_before_any_change(database_url: str) -> None:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, object]]] = AsyncConnectionPool(
        database_url, kwargs={"autocommit": False, "row_factory": dict_row}, open=False
    )
    await pool.open()
    try:
        with pytest.raises(SchemaSetupError, match="must open connections with autocommit=True"):
            await apply_schema(pool)
    finally:
        await pool.close()

    with psycopg.connect(database_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


async def test_schema_applies_once_per_worker(settings: Settings, database_url: str) -> None:
    first = await get_pool(settings)
    second = await get_pool(settings)

    assert first is second
    with psycopg.connect(database_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"checkpoints", "checkpoint_writes", "checkpoint_blobs", "threads", "app_schema_migrations"} <= tables
    await close_pool()


async def test_unreachable_database_is_database_unavailable() -> None:
    environment = base_environment("postgresql://app@127.0.0.1:9/app")
    settings = load_settings({**environment, "DATABASE_POOL_TIMEOUT_SECONDS": "1"})

    with pytest.raises(DatabaseUnavailable) as caught:
        await get_pool(settings)
    assert caught.value.headers["Retry-After"] == "5"
    assert caught.value.status == 503


def test_checkpointer_migrations_match_the_installed_saver() -> None:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    assert load_checkpointer_migrations() == tuple(AsyncPostgresSaver.MIGRATIONS)


# Runs in a fresh interpreter, so that nothing the test session imported hides what set-up imports.
SCHEMA_SETUP_PROBE = r"""
import asyncio, json, sys
from shared.database import close_pool, get_pool
from shared.settings import get_settings

async def main():
    await get_pool(get_settings())
    await close_pool()
asyncio.run(main())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("langgraph", "langchain_core"))))
"""


def test_schema_setup_imports_no_langgraph(database_url: str) -> None:
    environment = {**os.environ, **base_environment(database_url)}
    completed = subprocess.run(
        [sys.executable, "-c", SCHEMA_SETUP_PROBE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []
    with psycopg.connect(database_url) as conn:
        versions = conn.execute("SELECT count(*), max(v) FROM checkpoint_migrations").fetchone()
    assert versions is not None
    assert versions[0] == len(load_checkpointer_migrations() or ())
