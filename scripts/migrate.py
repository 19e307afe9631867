"""Apply the checkpointer's tables and the app's pending migrations to $DATABASE_URL.

    DATABASE_URL=postgresql://user@host:5432/dbname python scripts/migrate.py

Runs the same ``apply_schema`` as each worker's first request, under the same advisory lock, so it
is safe while workers run. Prints the versions it applied. Other settings come from the
environment as for the app (DATABASE_AUTH=entra signs in with Entra ID).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.script_settings import load_script_settings
from shared.database import apply_schema, create_pool
from shared.errors import SettingsError


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
