"""Analytics reads: p95 latency of the summary and daily queries over a year, and five years rolled up.

Data: one year of daily rows for 200 agents (73,200 rows), after the nightly job has run with
ANALYTICS_DAILY_RETENTION_DAYS=400, as a deployment that keeps a year of daily rows runs it: no
month is rolled up, and every ended month is closed with its totals. Then, in a second database,
five years of daily rows for 200 agents (365,400 rows), after the nightly job has run with the
default retention and moved all but the last few months into monthly rows. Each run calls each
query QUERIES_PER_RUN times in a row through the service (``usage_summary`` and ``daily_usage``,
pool and JSON shaping included) and takes the 95th percentile of those calls; the table shows the
median of the runs' p95 with its min and max.
As a baseline, each run also times ``SELECT 1`` through the same pool.

The split case is a range that starts on the 2nd of a month and ends on the 30th of a 31-day month:
57 to 60 of its days lie in months it covers only in part, about the most daily rows a summary of
up to 366 days reads once the previous month is closed.

Targets: p95 under 20 ms for every summary and daily case.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, bench_database, bench_environment, measured_row, progress, run_benchmark
from bench.rollup import load_daily_usage
from shared.analytics.queries import daily_usage, usage_summary
from shared.analytics.rollup import add_months, first_day_of_month
from shared.database import close_pool, get_pool
from shared.maintenance import run_maintenance
from shared.settings import Settings, load_settings

BENCHMARK = "analytics queries"
AGENTS = 200
QUICK_AGENTS = 20
RUNS = 5
QUICK_RUNS = 2
QUERIES_PER_RUN = 100
QUICK_QUERIES_PER_RUN = 10
TARGET_P95_MS = 20.0
# Long enough that the nightly job rolls up nothing of the one year loaded.
YEAR_RETENTION_DAYS = "400"


def p95(samples: list[float]) -> float:
    """Return the 95th percentile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def split_range(today: date) -> tuple[date, date]:
    """Return the 363-day range from the 2nd of a month to the 30th of the last 31-day month before ``today``'s."""
    end_month = add_months(first_day_of_month(today), -1)
    while (add_months(end_month, 1) - end_month).days != 31:
        end_month = add_months(end_month, -1)
    return add_months(end_month, -11).replace(day=2), end_month.replace(day=30)


def query_cases(settings: Settings, today: date) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Name each timed call; the daily cases read the window of agent-0001."""

    async def select_one() -> None:
        pool = await get_pool(settings)
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")

    split_start, split_end = split_range(today)
    return {
        "SELECT 1 through the pool": select_one,
        "summary, 30 days": lambda: usage_summary(settings, today - timedelta(days=29), today),
        "summary, 90 days": lambda: usage_summary(settings, today - timedelta(days=89), today),
        "summary, 366 days": lambda: usage_summary(settings, today - timedelta(days=365), today),
        "summary, 363 days split mid-month": lambda: usage_summary(settings, split_start, split_end),
        "daily, 30 days": lambda: daily_usage(settings, "agent-0001", 30, today=today),
        "daily, 366 days": lambda: daily_usage(settings, "agent-0001", 366, today=today),
    }


async def time_cases(settings: Settings, today: date, runs: int, calls: int) -> dict[str, list[float]]:
    """Return each case's p95 in ms, one per run; cases take turns within a run."""
    cases = query_cases(settings, today)
    for call in cases.values():
        await call()
    p95s: dict[str, list[float]] = {name: [] for name in cases}
    for run in range(runs):
        for name, call in cases.items():
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                await call()
                samples.append((time.perf_counter() - started) * 1000)
            p95s[name].append(p95(samples))
        progress(
            "run %d of %d: %s",
            run + 1,
            runs,
            ", ".join(f"{name} p95 {values[-1]:.1f} ms" for name, values in p95s.items()),
        )
    return p95s


def rows_for(data: str, p95s: dict[str, list[float]], quick: bool) -> list[Row]:
    baseline_name = "SELECT 1 through the pool"
    baseline = statistics.median(p95s[baseline_name])
    quick_note = " (quick: not a result)" if quick else ""
    rows = [measured_row(BENCHMARK, f"{data}: {baseline_name}", "ms (p95)", p95s[baseline_name], note=quick_note)]
    for name, values in p95s.items():
        if name == baseline_name:
            continue
        median = statistics.median(values)
        rows.append(
            measured_row(
                BENCHMARK,
                f"{data}: {name}",
                "ms (p95)",
                values,
                baseline=baseline_name,
                ratio=median / baseline if baseline else None,
                target=f"p95 < {TARGET_P95_MS:g} ms",
                met=None if quick else median < TARGET_P95_MS,
                note=quick_note,
            )
        )
    return rows


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield the p95 rows of a year of daily rows, then of five years after rollup."""
    agents = QUICK_AGENTS if quick else AGENTS
    runs = QUICK_RUNS if quick else RUNS
    calls = QUICK_QUERIES_PER_RUN if quick else QUERIES_PER_RUN
    now = datetime.now(UTC)
    today = now.date()

    with bench_database("analytics_queries_year") as database_url:
        environment = bench_environment(database_url, ANALYTICS_DAILY_RETENTION_DAYS=YEAR_RETENTION_DAYS)
        settings = load_settings(environment)
        try:
            await get_pool(settings)
            progress("loading one year of daily rows for %d agents", agents)
            load_daily_usage(database_url, today - timedelta(days=365), today, agents)
            progress("closing months: %s", (await run_maintenance(settings, now=now)).describe())
            p95s = await time_cases(settings, today, runs, calls)
        finally:
            await close_pool()
    for row in rows_for(f"1 year daily, {agents} agents", p95s, quick):
        yield row

    with bench_database("analytics_queries_5_years") as database_url:
        settings = load_settings(bench_environment(database_url))
        try:
            await get_pool(settings)
            progress("loading five years of daily rows for %d agents", agents)
            load_daily_usage(database_url, today - timedelta(days=5 * 365 + 1), today, agents)
            progress("rolling up: %s", (await run_maintenance(settings, now=now)).describe())
            p95s = await time_cases(settings, today, runs, calls)
        finally:
            await close_pool()
    for row in rows_for(f"5 years after rollup, {agents} agents", p95s, quick):
        yield row


if __name__ == "__main__":
    run_benchmark(__doc__.splitlines()[0] if __doc__ else BENCHMARK, measure)
