"""Helpers every benchmark shares: a throwaway database, timing statistics and the result rows.

A benchmark module exposes ``main(argv)`` through ``run_benchmark``: it prints progress on stderr
and, with ``--json PATH``, writes its result rows there for ``bench/run.py`` to put in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent

# Sums the stored size of one thread's checkpoints: rows, blobs and pending writes. octet_length
# counts the bytes a row holds before TOAST compression, so it is what the saver sent.
SELECT_THREAD_STORED_BYTES = """
SELECT (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)
          FROM checkpoints WHERE thread_id = %(thread_id)s)
     + (SELECT coalesce(sum(octet_length(blob)), 0)
          FROM checkpoint_blobs WHERE thread_id = %(thread_id)s)
     + (SELECT coalesce(sum(octet_length(blob)), 0)
          FROM checkpoint_writes WHERE thread_id = %(thread_id)s) AS stored_bytes
"""


@dataclass
class Row:
    """One line of the results table.

    ``median``, ``minimum`` and ``maximum`` are over the runs of one case. ``ratio`` compares the
    median with the baseline measured in the same run; ``met`` is None where the row has no target.
    """

    benchmark: str
    case: str
    unit: str
    median: float
    minimum: float
    maximum: float
    runs: int
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


def measured_row(benchmark: str, case: str, unit: str, samples: Sequence[float], **extra: Any) -> Row:
    """Build a row from ``samples`` (one value per run)."""
    if not samples:
        raise ValueError(f"no samples for {benchmark!r} case {case!r}")
    return Row(
        benchmark=benchmark,
        case=case,
        unit=unit,
        median=statistics.median(samples),
        minimum=min(samples),
        maximum=max(samples),
        runs=len(samples),
        **extra,
    )


def progress(message: str, *args: object) -> None:
    """Print one progress line on stderr, where it does not mix with the results."""
    text = message % args if args else message
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def server_url() -> str:
    """Return $DATABASE_URL, or start the repository's local PostgreSQL and return its URL."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    output = subprocess.run(
        [str(ROOT / "scripts" / "local-postgres")], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"DATABASE_URL=(\S+)", output)
    if match is None:
        raise RuntimeError(f"scripts/local-postgres printed no DATABASE_URL: {output!r}")
    return match.group(1)


@contextlib.contextmanager
def bench_database(label: str) -> Iterator[str]:
    """Create an empty database ``bench_<label>_<random>`` on the server, yield its URL, then drop it."""
    url = server_url()
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_environment(database_url: str, **overrides: str) -> dict[str, str]:
    """Return the app settings of a benchmark worker: offline model, password auth, local keys."""
    environment = {
        "DATABASE_URL": database_url,
        "MODEL_PROVIDER": "offline",
        "AUTH_TENANT_ID": "11111111-1111-1111-1111-111111111111",
        "AUTH_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
        "AUTH_KEY_SOURCE": "local",
        "AUTH_LOCAL_JWKS_FILE": str(ROOT / ".local" / "jwks.json"),
    }
    environment.update(overrides)
    return environment


async def time_call(call: Callable[[], Awaitable[object]]) -> float:
    """Await ``call()`` once and return how long it took, in milliseconds."""
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def thread_stored_bytes(pool: Any, thread_id: str) -> int:
    """Return how many bytes the checkpointer stores for ``thread_id``."""
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_THREAD_STORED_BYTES, {"thread_id": thread_id})
        row = await cur.fetchone()
    return int(row["stored_bytes"])


def run_benchmark(description: str, measure: Callable[[bool], AsyncIterator[Row]]) -> None:
    """Parse the common options, run ``measure(quick)`` and print or write the rows it yields."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="run a few iterations only (a smoke test, not a result)")
    parser.add_argument("--json", type=Path, help="write the result rows to this file as JSON")
    options = parser.parse_args()

    async def collect() -> list[Row]:
        return [row async for row in measure(options.quick)]

    rows = asyncio.run(collect())
    if options.json is not None:
        options.json.write_text(json.dumps([asdict(r) for r in rows], indent=2), encoding="utf-8")
    else:
        for row in rows:
            print(json.dumps(asdict(row)))
