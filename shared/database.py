"""The worker's PostgreSQL pool and schema: created lazily on first use, never at import.

One ``AsyncConnectionPool`` per worker process (per event loop, strictly: an asyncio pool cannot
be shared across loops, and tests run several). The first request opens it and applies the schema
once, under a PostgreSQL advisory lock so that cold workers starting together on an empty
database take turns instead of racing on ``CREATE TABLE``.

The checkpointer's own tables come from langgraph-checkpoint-postgres's migration list, read from
the installed package's source instead of imported. Importing the saver pulls in langchain-core
and LangGraph's serializers (about 300 ms measured on a 2-core machine), and a request that never
runs the graph, such as an analytics query on a cold worker, should not pay for them.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.errors import DatabaseUnavailable
from shared.settings import Settings

logger = logging.getLogger(__name__)

# psycopg_pool logs every connection at INFO; that is noise in Application Insights.
logging.getLogger("psycopg.pool").setLevel(logging.WARNING)

APPLICATION_NAME = "langgraph-functions"
# Arbitrary constant shared by every worker of this app: pg_advisory_lock(key) serializes schema set-up.
SCHEMA_LOCK_KEY = 7_283_512_001
ENTRA_TOKEN_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"  # noqa: S105 (a scope, not a secret)

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS app_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED_VERSIONS = "SELECT version FROM app_schema_migrations"
INSERT_MIGRATION_VERSION = "INSERT INTO app_schema_migrations (version, name) VALUES (%s, %s)"
TRY_SCHEMA_LOCK = "SELECT pg_try_advisory_lock(%s) AS locked"
RELEASE_SCHEMA_LOCK = "SELECT pg_advisory_unlock(%s)"
# How long a worker waits for another worker's schema set-up, and how often it tries the lock.
SCHEMA_LOCK_TIMEOUT_SECONDS = 120.0
SCHEMA_LOCK_POLL_SECONDS = 0.1

# The checkpointer's migration list: the index of each statement is its version, recorded in
# checkpoint_migrations, as AsyncPostgresSaver.setup() records it.
CHECKPOINTER_DISTRIBUTION = "langgraph-checkpoint-postgres"
CHECKPOINTER_MIGRATIONS_FILE = "langgraph/checkpoint/postgres/base.py"
SELECT_CHECKPOINTER_VERSION = "SELECT max(v) AS v FROM checkpoint_migrations"
INSERT_CHECKPOINTER_VERSION = "INSERT INTO checkpoint_migrations (v) VALUES (%s)"

Pool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]


class SchemaSetupError(RuntimeError):
    """The schema could not be applied; the message says why and what to change."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Read ``shared/migrations/NNNN_name.sql`` in version order.

    The list is append-only: a shipped migration is never edited, a change is a new file.
    """
    found: list[Migration] = []
    for entry in resources.files("shared.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaSetupError(f"migration versions must run 1, 2, 3... without gaps, found {versions}")
    return found


def _connection_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "application_name": APPLICATION_NAME,
        # 0 prepares every statement on first use; None turns prepared statements off, which
        # PgBouncer in transaction mode needs because a statement may land on another server connection.
        "prepare_threshold": 0 if settings.database_prepared_statements else None,
        "connect_timeout": max(1, int(settings.database_pool_timeout_seconds)),
    }
    if settings.database_prepared_statements:
        # NOTE: PgBouncer rejects the 'options' startup parameter, so behind it the statement
        # timeout must come from the role instead (ALTER ROLE ... SET statement_timeout).
        kwargs["options"] = f"-c statement_timeout={settings.database_statement_timeout_ms}"
    return kwargs


def _entra_kwargs(settings: Settings) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Build a callable that the pool calls for each new connection, adding a fresh Entra token.

    The token is the password; azure-identity caches it and renews it before it expires, and
    connections live shorter than a token (DATABASE_CONNECTION_MAX_LIFETIME_SECONDS).
    """
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential()
    base = _connection_kwargs(settings)

    async def kwargs() -> dict[str, Any]:
        token = await credential.get_token(ENTRA_TOKEN_SCOPE)
        return {**base, "password": token.token}

    return kwargs


async def check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Raise if ``conn`` no longer works; the pool then discards it and takes or opens another.

    Like ``AsyncConnectionPool.check_connection`` but with ``prepare=False``: with
    ``prepare_threshold=0`` the pool's own check prepares its empty query on every checkout, two
    round trips instead of one, on every connection every request takes.
    """
    if conn.autocommit:
        await conn.execute("", prepare=False)
        return
    await AsyncConnectionPool.check_connection(conn)


def create_pool(settings: Settings, *, name: str = "app") -> Pool:
    """Create the worker's pool, closed; ``open_pool`` opens it."""
    kwargs: Any = _entra_kwargs(settings) if settings.database_auth == "entra" else _connection_kwargs(settings)
    return AsyncConnectionPool(
        settings.database_url,
        kwargs=kwargs,
        min_size=1,
        max_size=settings.database_pool_max_size,
        timeout=settings.database_pool_timeout_seconds,
        max_lifetime=float(settings.database_connection_max_lifetime_seconds),
        # Connections that died while idle (fail-over, a firewall dropping idle TCP) are found
        # and replaced when they are taken from the pool, not when a query fails on them.
        check=check_connection,
        reconnect_timeout=60.0,
        name=name,
        open=False,
    )


@functools.cache
def load_checkpointer_migrations() -> tuple[str, ...] | None:
    """Read the ``MIGRATIONS`` list of the installed langgraph-checkpoint-postgres without importing it.

    Returns None when the package's files or the list cannot be found (a layout this code does not
    know); the caller then falls back to the saver's own ``setup()``.
    """
    try:
        files = metadata.files(CHECKPOINTER_DISTRIBUTION) or []
        source = next(f for f in files if f.as_posix() == CHECKPOINTER_MIGRATIONS_FILE).read_text(encoding="utf-8")
    except (metadata.PackageNotFoundError, StopIteration, OSError):
        return None

    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign) or not any(
            isinstance(target, ast.Name) and target.id == "MIGRATIONS" for target in node.targets
        ):
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(statement, str) for statement in value):
            return tuple(value)
    return None


async def _apply_checkpointer_migrations(conn: psycopg.AsyncConnection[DictRow]) -> list[int]:
    """Apply the checkpointer's pending migrations as ``AsyncPostgresSaver.setup()`` does; return their versions.

    Each statement runs on its own in autocommit mode, because some create indexes CONCURRENTLY.
    """
    migrations = load_checkpointer_migrations()
    if migrations is None:
        logger.warning(
            "could not read the migration list of %s %s; running the saver's setup(), which imports LangGraph",
            CHECKPOINTER_DISTRIBUTION,
            metadata.version(CHECKPOINTER_DISTRIBUTION),
        )
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        await AsyncPostgresSaver(conn).setup()
        return []

    await conn.execute(migrations[0])
    cur = await conn.execute(SELECT_CHECKPOINTER_VERSION)
    row = await cur.fetchone()
    current = -1 if row is None or row["v"] is None else int(row["v"])
    applied: list[int] = []
    for version in range(current + 1, len(migrations)):
        await conn.execute(migrations[version])
        await conn.execute(INSERT_CHECKPOINTER_VERSION, (version,))
        applied.append(version)
    if applied:
        logger.info("applied checkpointer migrations %d to %d", applied[0], applied[-1])
    return applied


async def _take_schema_lock(conn: psycopg.AsyncConnection[DictRow], timeout_seconds: float) -> None:
    """Take the schema advisory lock, asking again every SCHEMA_LOCK_POLL_SECONDS until ``timeout_seconds``.

    A blocking ``pg_advisory_lock`` would wait inside a running statement, whose snapshot makes
    the other worker's ``CREATE INDEX CONCURRENTLY`` wait for it in turn: neither finishes until
    the statement timeout cancels one. Between two tries this worker runs no statement.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        cur = await conn.execute(TRY_SCHEMA_LOCK, (SCHEMA_LOCK_KEY,))
        row = await cur.fetchone()
        if row is not None and row["locked"]:
            return
        if time.monotonic() >= deadline:
            raise SchemaSetupError(
                f"another worker held the schema lock ({SCHEMA_LOCK_KEY}) for more than {timeout_seconds:g} s"
            )
        await asyncio.sleep(SCHEMA_LOCK_POLL_SECONDS)


async def apply_schema(
    pool: Pool,
    *,
    setup_checkpointer: bool = True,
    lock_timeout_seconds: float = SCHEMA_LOCK_TIMEOUT_SECONDS,
) -> list[int]:
    """Apply the checkpointer's tables and the app's pending migrations; return the app versions applied.

    Runs under a session advisory lock so concurrent workers apply each migration exactly once.
    Each app migration runs in its own transaction together with its version row. Raises
    ``SchemaSetupError`` when the pool's connections are not in autocommit mode, before any change
    (the checkpointer builds indexes CONCURRENTLY, which fails half-way inside a transaction), and
    when another worker holds the lock for longer than ``lock_timeout_seconds``.
    """
    applied: list[int] = []
    async with pool.connection() as conn:
        if not conn.autocommit:
            raise SchemaSetupError(
                f"pool {pool.name!r} must open connections with autocommit=True: the checkpointer "
                "creates indexes CONCURRENTLY, which cannot run inside a transaction"
            )
        await _take_schema_lock(conn, lock_timeout_seconds)
        try:
            if setup_checkpointer:
                await _apply_checkpointer_migrations(conn)
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            cur = await conn.execute(SELECT_APPLIED_VERSIONS)
            done = {row[0] if isinstance(row, tuple) else row["version"] for row in await cur.fetchall()}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    # A migration file holds several statements, which only an unprepared, parameterless query accepts.
                    await conn.execute(migration.sql.encode(), prepare=False)
                    await conn.execute(INSERT_MIGRATION_VERSION, (migration.version, migration.name))
                applied.append(migration.version)
                logger.info("applied migration %04d_%s", migration.version, migration.name)
        finally:
            await conn.execute(RELEASE_SCHEMA_LOCK, (SCHEMA_LOCK_KEY,))
    return applied


@dataclass
class _LoopResources:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pool: Pool | None = None
    ready: bool = False


_resources: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = weakref.WeakKeyDictionary()


def _loop_resources() -> _LoopResources:
    loop = asyncio.get_running_loop()
    found = _resources.get(loop)
    if found is None:
        found = _resources[loop] = _LoopResources()
    return found


async def get_pool(settings: Settings) -> Pool:
    """Return the worker's open pool with the schema applied, creating both on the first call.

    Concurrent first callers wait on one lock, so only one pool is opened and the schema is
    applied once. When the database cannot be reached, raises ``DatabaseUnavailable`` and leaves
    nothing half-made: the next call starts again.
    """
    state = _loop_resources()
    if state.ready and state.pool is not None:
        return state.pool

    async with state.lock:
        if state.ready and state.pool is not None:
            return state.pool

        started = time.monotonic()
        pool = create_pool(settings)
        try:
            await pool.open(wait=True, timeout=settings.database_pool_timeout_seconds)
            await apply_schema(pool)
        except (PoolTimeout, psycopg.OperationalError) as err:
            await pool.close()
            raise DatabaseUnavailable(
                "The database is unavailable; retry in a few seconds.", headers={"Retry-After": "5"}
            ) from err
        except BaseException:
            await pool.close()
            raise

        state.pool = pool
        state.ready = True
        logger.info(
            "opened pool %r (max %d connections) and applied the schema in %.0f ms",
            pool.name,
            settings.database_pool_max_size,
            (time.monotonic() - started) * 1000,
        )
        return pool


async def close_pool() -> None:
    """Close this event loop's pool, if one was opened (local host shutdown and tests)."""
    state = _resources.pop(asyncio.get_running_loop(), None)
    if state is not None and state.pool is not None:
        await state.pool.close()
