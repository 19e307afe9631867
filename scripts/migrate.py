"""Apply the checkpointer's tables and the app's pending migrations to $DATABASE_URL.

    DATABASE_URL=postgresql://user@host:5432/dbname python scripts/migrate.py

Runs the same ``apply_schema`` as each worker's first request, under the same advisory lock, so it
is safe while workers run. Prints the versions it applied. Other settings come from the
environment as for the app (DATABASE_AUTH=entra signs in with Entra ID).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.database import apply_schema, create_pool
from shared.errors import SettingsError
from shared.settings import Settings, load_settings

# This command authenticates no caller, so the app's required auth settings get a placeholder GUID
# when they are not set, instead of failing on settings the command never reads.
_UNUSED_AUTH_SETTINGS = {
    "AUTH_TENANT_ID": "00000000-0000-0000-0000-000000000000",
    "AUTH_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
}


def load_script_settings() -> Settings:
    """Load the app's settings from the environment; SettingsError names a missing DATABASE_URL."""
    return load_settings({**_UNUSED_AUTH_SETTINGS, **os.environ})


async def main() -> int:
    try:
        settings = load_script_settings()
    except SettingsError as err:
        print(err.detail, file=sys.stderr)
        return 2
    pool = create_pool(settings, name="migrate")
    await pool.open(wait=True, timeout=settings.database_pool_timeout_seconds)
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        applied = await apply_schema(pool, setup_checkpointer=lambda: AsyncPostgresSaver(pool).setup())
    finally:
        await pool.close()
    if applied:
        print("applied migrations " + ", ".join(f"{version:04d}" for version in applied))
    else:
        print("the schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
