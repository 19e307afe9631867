"""Concurrency in one worker: N conversations at once on distinct threads, offline model at 200 ms a call.

Each run starts N conversations together, each one turn of "what is 2+2" (four model calls) on a
thread of its own, through the service layer with the default pool (DATABASE_POOL_MAX_SIZE 10),
and divides the turns by the wall time. Two designs are measured in the same runs, alternating:
``per-request saver`` (the app: each request's graph has an AsyncPostgresSaver of its own) and
``shared saver`` (one saver for the pool, which serializes its database calls behind one lock).

Targets: throughput at 16 is at least 12x throughput at 1; at 64, no error and no pool timeout.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, bench_database, bench_environment, measured_row, progress, run_benchmark

BENCHMARK = "concurrency in one worker"
LEVELS = (1, 4, 16, 64)
QUICK_LEVELS = (1, 4)
RUNS = 5
QUICK_RUNS = 2
MODEL_DELAY_MS = 200
QUICK_MODEL_DELAY_MS = 20
SPEED_UP_TARGET = 12.0
OWNER = "bench/user/concurrency"
DESIGNS = ("per-request saver", "shared saver")


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield a throughput row per design and level, and the target rows."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from shared import conversations
    from shared.database import close_pool, get_pool
    from shared.settings import load_settings

    levels = QUICK_LEVELS if quick else LEVELS
    delay = QUICK_MODEL_DELAY_MS if quick else MODEL_DELAY_MS
    runs = QUICK_RUNS if quick else RUNS
    per_request_graph = conversations._get_graph
    shared_graphs: dict[int, Any] = {}

    async def shared_saver_graph(settings: Any, pool: Any) -> Any:
        graph = shared_graphs.get(id(pool))
        if graph is None:
            graph = await per_request_graph(settings, pool)
            graph = shared_graphs[id(pool)] = graph.copy(update={"checkpointer": AsyncPostgresSaver(pool)})
        return graph

    with bench_database("concurrency") as url:
        settings = load_settings(bench_environment(url, OFFLINE_MODEL_DELAY_MS=str(delay)))
        await get_pool(settings)

        async def one_run(level: int) -> tuple[float, int]:
            """Return turns per second and how many turns failed."""

            async def turn() -> object:
                return await conversations.run_turn(settings, OWNER, uuid.uuid4().hex, message="what is 2+2")

            started = time.perf_counter()
            results = await asyncio.gather(*(turn() for _ in range(level)), return_exceptions=True)
            elapsed = time.perf_counter() - started
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures[:3]:
                progress("%s: a turn failed: %r", BENCHMARK, failure)
            return (level - len(failures)) / elapsed, len(failures)

        progress("%s: warming up", BENCHMARK)
        await one_run(1)

        throughput: dict[tuple[str, int], list[float]] = {}
        failures: dict[tuple[str, int], int] = {}
        for level in levels:
            for run in range(runs):
                for design in DESIGNS:
                    conversations._get_graph = per_request_graph if design == DESIGNS[0] else shared_saver_graph  # type: ignore[assignment]
                    try:
                        rate, failed = await one_run(level)
                    finally:
                        conversations._get_graph = per_request_graph  # type: ignore[assignment]
                    throughput.setdefault((design, level), []).append(rate)
                    failures[(design, level)] = failures.get((design, level), 0) + failed
                progress(
                    "%s: %d at once, run %d/%d, %.1f turns/s per-request, %.1f shared",
                    BENCHMARK,
                    level,
                    run + 1,
                    runs,
                    throughput[(DESIGNS[0], level)][-1],
                    throughput[(DESIGNS[1], level)][-1],
                )
        await close_pool()

    for design in DESIGNS:
        baseline = statistics.median(throughput[(design, levels[0])])
        for level in levels:
            row = measured_row(
                BENCHMARK,
                f"{design}, {level} at once",
                "turns/s",
                throughput[(design, level)],
                baseline=f"{design}, 1 at once",
                note=f"{failures[(design, level)]} failed turns, model delay {delay} ms",
            )
            row.ratio = row.median / baseline
            yield row

    design = DESIGNS[0]
    middle = 16 if 16 in levels else levels[-1]
    speed_up = statistics.median(throughput[(design, middle)]) / statistics.median(throughput[(design, levels[0])])
    yield Row(
        benchmark=BENCHMARK,
        case=f"{design}: throughput at {middle} / at 1",
        unit="ratio",
        median=speed_up,
        minimum=speed_up,
        maximum=speed_up,
        runs=runs,
        baseline="1 at once",
        ratio=speed_up,
        target=f">= {SPEED_UP_TARGET}x",
        met=speed_up >= SPEED_UP_TARGET,
    )
    top = levels[-1]
    failed = failures[(design, top)]
    yield Row(
        benchmark=BENCHMARK,
        case=f"{design}: failed turns at {top} at once",
        unit="turns",
        median=failed,
        minimum=failed,
        maximum=failed,
        runs=runs,
        target="0 (no error, no pool timeout)",
        met=failed == 0,
    )


if __name__ == "__main__":
    run_benchmark(__doc__ or BENCHMARK, measure)
