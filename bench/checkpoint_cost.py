"""Checkpoint cost per turn: one supervisor turn with PostgreSQL against the same graph in memory.

Cases, interleaved turn by turn so that machine noise hits each alike:
- ``memory``: the app's compiled graph with LangGraph's InMemorySaver (the baseline);
- ``graph, postgres, <mode>``: the same graph with AsyncPostgresSaver in each durability mode,
  without the service layer;
- ``run_turn, exit``: the app's service layer in the app's durability mode (lease, state check,
  run, saving the turn with the lease's release, analytics flush). Its saver holds the turn's
  writes until the run ends, which only the "exit" mode supports.

Each turn starts a new thread with "what is 2+2" (four model calls of the offline model, no delay).
A run is the median of ``TURNS_PER_RUN`` turns per case; the table shows the median, min and max of
the runs. Target: the service-layer turn in the app's durability mode is at most 1.5x the memory turn.
"""

from __future__ import annotations

import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, bench_database, bench_environment, measured_row, progress, run_benchmark, time_call

BENCHMARK = "checkpoint cost per turn"
MODES = ("exit", "async", "sync")
RUNS = 5
TURNS_PER_RUN = 20
QUICK_TURNS_PER_RUN = 2
WARM_UP_TURNS = 5
TARGET_RATIO = 1.5
MESSAGE = "what is 2+2"
OWNER = "bench/user/checkpoint-cost"


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield one row per case and the target row."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from shared import conversations
    from shared.database import close_pool, get_pool
    from shared.graph.supervisor import compile_supervisor
    from shared.settings import load_settings

    turns_per_run = QUICK_TURNS_PER_RUN if quick else TURNS_PER_RUN
    with bench_database("checkpoint_cost") as url:
        settings = load_settings(bench_environment(url))
        pool = await get_pool(settings)
        memory_graph = compile_supervisor(settings, InMemorySaver())
        postgres_graph = compile_supervisor(settings, None)

        def graph_turn(graph: Any, durability: str) -> Callable[[], Awaitable[object]]:
            async def turn() -> object:
                config = {"configurable": {"thread_id": uuid.uuid4().hex}}
                return await graph.ainvoke({"messages": [HumanMessage(MESSAGE)]}, config, durability=durability)

            return turn

        def postgres_turn(durability: str) -> Callable[[], Awaitable[object]]:
            async def turn() -> object:
                # One saver per request, as the service layer makes them.
                graph = postgres_graph.copy(update={"checkpointer": AsyncPostgresSaver(pool)})
                return await graph_turn(graph, durability)()

            return turn

        async def service_turn() -> object:
            return await conversations.run_turn(settings, OWNER, uuid.uuid4().hex, message=MESSAGE)

        cases: dict[str, Callable[[], Awaitable[object]]] = {"memory": graph_turn(memory_graph, "exit")}
        for mode in MODES:
            cases[f"graph, postgres, {mode}"] = postgres_turn(mode)
        cases[f"run_turn, {conversations.DURABILITY}"] = service_turn

        progress("%s: warming up", BENCHMARK)
        for call in cases.values():
            for _ in range(WARM_UP_TURNS):
                await call()

        per_run: dict[str, list[float]] = {name: [] for name in cases}
        ratios: list[float] = []
        for run in range(RUNS):
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(turns_per_run):
                for name, call in cases.items():
                    times[name].append(await time_call(call))
            for name in cases:
                per_run[name].append(statistics.median(times[name]))
            ratios.append(per_run["run_turn, exit"][-1] / per_run["memory"][-1])
            progress(
                "%s: run %d/%d, memory %.1f ms, run_turn exit %.1f ms",
                BENCHMARK,
                run + 1,
                RUNS,
                per_run["memory"][-1],
                per_run["run_turn, exit"][-1],
            )
        await close_pool()

    baseline = statistics.median(per_run["memory"])
    for name, samples in per_run.items():
        row = measured_row(BENCHMARK, name, "ms/turn", samples, baseline="memory")
        row.ratio = row.median / baseline
        yield row
    met = statistics.median(ratios) <= TARGET_RATIO
    yield measured_row(
        BENCHMARK,
        f"run_turn ({conversations.DURABILITY}) / memory, per run",
        "ratio",
        ratios,
        baseline="memory",
        ratio=statistics.median(ratios),
        target=f"<= {TARGET_RATIO}x",
        met=met,
    )


if __name__ == "__main__":
    run_benchmark(__doc__ or BENCHMARK, measure)
