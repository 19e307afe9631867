"""Analytics writes: request flushes per second through the service versus the same upsert in pgbench.

Each flush is what one request writes: three agent invocations, pre-aggregated and sent as one
``UPSERT_DAILY_USAGE`` statement (one round trip). The service side runs N coroutines in one
process, each calling ``flush_usage`` in a loop on the worker's pool, as N concurrent requests of
one worker would. The baseline runs the same statement with the same JSON document through
pgbench (``-M prepared``, N clients) on the same server, in the same run.

Shapes: ``hot`` puts all three invocations on one agent, so every writer updates one row;
``50 agents`` spreads each flush over three distinct agents of 50.

Target: the service reaches at least 50% of pgbench's flushes per second at every level.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, bench_database, bench_environment, measured_row, progress, run_benchmark
from shared.analytics.recorder import Invocation
from shared.analytics.writer import (
    UPSERT_DAILY_USAGE,
    aggregate_invocations,
    flush_usage,
    lost_write_count,
    usage_document,
)
from shared.database import Pool, close_pool, get_pool
from shared.settings import ModelPrice, Settings, load_settings

BENCHMARK = "analytics writes"
LEVELS = (1, 4, 16)
QUICK_LEVELS = (1, 4)
RUNS = 5
QUICK_RUNS = 2
SECONDS_PER_RUN = 3.0
QUICK_SECONDS_PER_RUN = 0.5
SHAPES = ("hot", "50 agents")
AGENT_COUNT = 50
# Three disjoint bands of agent numbers, so a flush names three distinct agents, already sorted.
AGENT_BANDS = ((0, 16), (17, 33), (34, 49))
TARGET_RATIO = 0.5
SIDES = ("service", "pgbench")
LATENCY_MS = 40
INPUT_TOKENS = 900
OUTPUT_TOKENS = 60
PRICE = ModelPrice(input_per_million=0.15, output_per_million=0.6)
PGBENCH_CANDIDATES = ("/usr/lib/postgresql/15/bin/pgbench",)


def find_pgbench() -> str:
    """Return the pgbench binary: the PostgreSQL 15 one, or the first on PATH."""
    for candidate in PGBENCH_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("pgbench") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None)
    if found is None:
        raise RuntimeError("pgbench was not found; install the postgresql package")
    return str(found)


def flush_invocations(shape: str, rng: random.Random, day: date) -> list[Invocation]:
    """Return the three invocations one request flushes."""
    if shape == "hot":
        agents = ["hot", "hot", "hot"]
    else:
        agents = [f"agent-{rng.randint(low, high):02d}" for low, high in AGENT_BANDS]
    return [Invocation(agent, day, LATENCY_MS, True, INPUT_TOKENS, OUTPUT_TOKENS, "offline") for agent in agents]


async def service_rate(settings: Settings, pool: Pool, shape: str, writers: int, seconds: float) -> float:
    """Run ``writers`` coroutines flushing through ``pool`` for ``seconds``; return flushes per second."""
    day = datetime.now(UTC).date()
    lost_before = lost_write_count()
    deadline = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(number: int) -> None:
        rng = random.Random(number)
        while time.perf_counter() < deadline:
            await flush_usage(settings, pool, flush_invocations(shape, rng, day))
            counts[number] += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.perf_counter() - started
    if lost_write_count() != lost_before:
        raise RuntimeError(f"{lost_write_count() - lost_before} analytics writes were lost during the run")
    return sum(counts) / elapsed


def pgbench_script(shape: str) -> str:
    """Return a pgbench script that sends the service's upsert statement.

    The JSON document is the one the service sends for a flush of the same shape, with pgbench's
    ``:a1``-style variables spliced in as the agent numbers.
    """
    today = datetime.now(UTC).date()
    if shape == "hot":
        invocations = flush_invocations("hot", random.Random(0), today)
    else:
        placeholders = [f"agent-@{i + 1}@" for i in range(len(AGENT_BANDS))]
        invocations = [
            Invocation(name, today, LATENCY_MS, True, INPUT_TOKENS, OUTPUT_TOKENS, "offline") for name in placeholders
        ]
    settings = Settings(database_url="", model_prices={"offline": PRICE})
    document = usage_document(aggregate_invocations(settings, invocations))
    document = document.replace(f'"{today.isoformat()}"', "\"' || current_date || '\"")
    for i in range(len(AGENT_BANDS)):
        document = document.replace(f"@{i + 1}@", f"' || lpad(:a{i + 1}::text, 2, '0') || '")
    upsert = UPSERT_DAILY_USAGE.replace("%(rows)s", f"('{document}')")
    lines = [f"\\set a{i + 1} random({low}, {high})" for i, (low, high) in enumerate(AGENT_BANDS)]
    # pgbench ends a statement at the end of a line, so the upsert goes on one line.
    lines.append(" ".join(upsert.split()) + ";")
    return "\n".join(lines) + "\n"


def pgbench_rate(pgbench: str, database_url: str, shape: str, clients: int, seconds: float) -> float:
    """Run the script with pgbench for ``seconds``; return transactions (flushes) per second."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(pgbench_script(shape))
        script.flush()
        command = [
            pgbench,
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={clients}",
            f"--jobs={min(clients, 2)}",
            f"--time={max(1, round(seconds))}",
            f"--file={script.name}",
            database_url,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed with exit code {completed.returncode}: {completed.stderr.strip()}")
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", completed.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps line: {completed.stdout!r}")
    return float(match.group(1))


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield per shape and level a pgbench row and a service row with its ratio."""
    levels = QUICK_LEVELS if quick else LEVELS
    runs = QUICK_RUNS if quick else RUNS
    seconds = QUICK_SECONDS_PER_RUN if quick else SECONDS_PER_RUN
    pgbench = find_pgbench()
    quick_note = " (quick: not a result)" if quick else ""

    with bench_database("analytics_writes") as database_url:
        settings = load_settings(bench_environment(database_url, DATABASE_POOL_MAX_SIZE=str(max(levels))))
        settings = replace(settings, analytics_write_timeout_ms=10_000, model_prices={"offline": PRICE})
        pool = await get_pool(settings)
        try:
            for shape in SHAPES:
                for level in levels:
                    samples: dict[str, list[float]] = {side: [] for side in SIDES}
                    for run in range(runs):
                        # Rotate which side goes first, so none always meets a warmer cache.
                        for side in SIDES[run % len(SIDES) :] + SIDES[: run % len(SIDES)]:
                            if side == "pgbench":
                                rate = await asyncio.to_thread(
                                    pgbench_rate, pgbench, database_url, shape, level, seconds
                                )
                            else:
                                rate = await service_rate(settings, pool, shape, level, seconds)
                            samples[side].append(rate)
                        progress(
                            "%s, %d writers, run %d of %d: %s",
                            shape,
                            level,
                            run + 1,
                            runs,
                            ", ".join(f"{side} {values[-1]:.0f}/s" for side, values in samples.items()),
                        )

                    case = f"{shape}, {level} writers"
                    baseline = statistics.median(samples["pgbench"])
                    ratio = statistics.median(samples["service"]) / baseline
                    yield measured_row(BENCHMARK, f"{case}: pgbench", "flushes/s", samples["pgbench"], note=quick_note)
                    yield measured_row(
                        BENCHMARK,
                        f"{case}: service",
                        "flushes/s",
                        samples["service"],
                        baseline="pgbench, same statement",
                        ratio=ratio,
                        target=f">= {TARGET_RATIO:.0%} of pgbench",
                        met=None if quick else ratio >= TARGET_RATIO,
                        note="3 invocations per flush" + quick_note,
                    )
        finally:
            await close_pool()


if __name__ == "__main__":
    run_benchmark(__doc__.splitlines()[0] if __doc__ else BENCHMARK, measure)
