"""Nightly rollup of one million daily usage rows: time, rows per second and peak client memory.

Each run loads 1,000 agents x 1,000 days of daily rows into a fresh database, printing progress.
Then it times ``run_maintenance`` with the default retention (90 days daily), which moves every
month wholly past retention into monthly rows, one month per transaction. Peak memory is this process's peak
Python allocation during the run (tracemalloc) and its peak resident size (ru_maxrss, which
includes the loader and the imports). The rollup itself runs in SQL, so client memory does not
grow with the rows.

Also holds ``load_daily_usage``, the bulk loader that bench/analytics_queries.py uses.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported here so that no timed run includes the first import of what run_maintenance loads lazily.
import langgraph.checkpoint.postgres.aio  # noqa: F401

import shared.compaction  # noqa: F401
from bench.common import Row, bench_database, bench_environment, measured_row, progress, run_benchmark
from shared.database import close_pool, get_pool
from shared.maintenance import run_maintenance
from shared.settings import load_settings

BENCHMARK = "rollup"
AGENTS = 1_000
DAYS = 1_000
QUICK_AGENTS = 40
QUICK_DAYS = 500
RUNS = 5
QUICK_RUNS = 2

# Every row gets 10 to 73 invocations, a twentieth of them errors, spread over four latency
# buckets (up to 25, 50, 100 and 250 ms), so sums, rates and percentiles all have data.
INSERT_DAILY_USAGE_ROWS = """
INSERT INTO agent_usage_analytics (
    date, agent_id, invocation_count, success_count, error_count, total_input_tokens,
    total_output_tokens, total_latency_ms, min_latency_ms, max_latency_ms, estimated_cost_usd,
    latency_histogram, unpriced_models
)
SELECT day::date, 'agent-' || lpad(agent::text, 4, '0'), n, n - n / 20, n / 20, n * 900, n * 60,
       n * 90, 12, 240, n * 0.000171,
       ARRAY[0, n / 4, n / 4, n / 4, n - 3 * (n / 4), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]::bigint[], '{}'
  FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') AS day,
       generate_series(1, %(agents)s) AS agent,
       LATERAL (SELECT 10 + (hashint4(agent * 7919 + (day::date - date '2000-01-01')) & 63) AS n) AS counts
"""


def load_daily_usage(database_url: str, first: date, last: date, agents: int, *, chunk_days: int = 50) -> int:
    """Insert one row per day from ``first`` to ``last`` and agent; return how many rows were inserted.

    Loads ``chunk_days`` days per statement and prints a progress line after each.
    """
    total_rows = ((last - first).days + 1) * agents
    inserted = 0
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        chunk_first = first
        while chunk_first <= last:
            chunk_last = min(last, chunk_first + timedelta(days=chunk_days - 1))
            cur = conn.execute(INSERT_DAILY_USAGE_ROWS, {"first": chunk_first, "last": chunk_last, "agents": agents})
            inserted += cur.rowcount
            progress(
                "loaded %d of %d daily usage rows (%d%%) in %.0f s",
                inserted,
                total_rows,
                100 * inserted // total_rows,
                time.monotonic() - started,
            )
            chunk_first = chunk_last + timedelta(days=1)
        conn.execute("ANALYZE agent_usage_analytics")
    return inserted


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield the rollup's duration, throughput and peak memory over the runs."""
    agents, days = (QUICK_AGENTS, QUICK_DAYS) if quick else (AGENTS, DAYS)
    runs = QUICK_RUNS if quick else RUNS
    now = datetime.now(UTC)
    today = now.date()
    seconds: list[float] = []
    rates: list[float] = []
    traced_peaks: list[float] = []
    rolled_rows = 0

    for run in range(runs):
        with bench_database("rollup") as database_url:
            settings = load_settings(bench_environment(database_url))
            try:
                await get_pool(settings)
                progress("run %d of %d: loading %d agents x %d days", run + 1, runs, agents, days)
                load_daily_usage(database_url, today - timedelta(days=days), today - timedelta(days=1), agents)

                tracemalloc.start()
                started = time.perf_counter()
                summary = await run_maintenance(settings, now=now)
                elapsed = time.perf_counter() - started
                _, traced_peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            finally:
                await close_pool()

        rolled_rows = summary.daily_rows_rolled_up
        seconds.append(elapsed)
        rates.append(rolled_rows / elapsed)
        traced_peaks.append(traced_peak / 2**20)
        progress("run %d of %d: %s", run + 1, runs, summary.describe())

    note = f"{agents * days:,} daily rows loaded, {rolled_rows:,} rolled up" + (
        " (quick: not a result)" if quick else ""
    )
    resident_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    yield measured_row(BENCHMARK, "rollup duration", "s", seconds, note=note)
    yield measured_row(BENCHMARK, "rollup throughput", "daily rows/s", rates, note=note)
    yield measured_row(BENCHMARK, "peak Python allocation during rollup", "MiB", traced_peaks, note="tracemalloc")
    yield measured_row(
        BENCHMARK,
        "peak resident size of the process",
        "MiB",
        [resident_mib],
        note="ru_maxrss over the whole benchmark, loading included",
    )


if __name__ == "__main__":
    run_benchmark(__doc__.splitlines()[0] if __doc__ else BENCHMARK, measure)
