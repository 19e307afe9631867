"""Run the nightly maintenance job once against $DATABASE_URL and print its summary.

    DATABASE_URL=postgresql://user@host:5432/dbname python scripts/run_maintenance.py

The same job as the ``nightly_maintenance`` timer function, with the retention settings
(ANALYTICS_DAILY_RETENTION_DAYS, THREAD_DELETE_AFTER_DAYS, ...) read from the environment. It
deletes data past retention, so point it only at a database whose settings you mean.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.script_settings import load_script_settings
from shared.database import close_pool
from shared.errors import SettingsError
from shared.maintenance import run_maintenance


async def main() -> int:
    try:
        settings = load_script_settings()
    except SettingsError as err:
        print(err.detail, file=sys.stderr)
        return 2
    try:
        summary = await run_maintenance(settings)
    finally:
        await close_pool()
    print(summary.describe())
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
