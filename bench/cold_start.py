"""Cold start and memory: importing the app, the first turn of a new worker, and RSS over many turns.

- ``import function_app``: seconds to import the app in a fresh interpreter (interpreter start-up
  itself excluded), one process per run.
- Requests that never run the graph: a fresh process imports the app, opens the pool (schema set-up
  included) and runs the analytics summary and daily queries; the table lists any LangGraph or
  LangChain module they imported (there should be none).
- First turn: from the moment the parent starts a fresh worker process on an empty database to the
  end of its first turn, pool opening and schema set-up included.
- Memory: one process runs ``MEMORY_TURNS`` turns over ``MEMORY_THREADS`` threads in rotation and
  reports its peak RSS after half of them and the growth of its RSS over the second half.

Targets: import at most 300 ms; first turn at most 2 s; RSS growth over the second half under 5%.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Row, bench_database, bench_environment, measured_row, progress, run_benchmark

BENCHMARK = "cold start and memory"
RUNS = 5
IMPORT_TARGET_MS = 300.0
FIRST_TURN_TARGET_MS = 2000.0
MEMORY_TURNS = 2000
QUICK_MEMORY_TURNS = 40
MEMORY_THREADS = 50
RSS_GROWTH_TARGET = 0.05

IMPORT_PROBE = r"""
import time
started = time.perf_counter()
import function_app
print((time.perf_counter() - started) * 1000)
"""

NO_GRAPH_PROBE = r"""
import asyncio, json, sys
from datetime import date, timedelta
import function_app
from shared.analytics import queries
from shared.database import close_pool, get_pool
from shared.settings import get_settings

async def main():
    settings = get_settings()
    await get_pool(settings)
    await queries.usage_summary(settings, date.today() - timedelta(days=30), date.today())
    await queries.daily_usage(settings, "supervisor", 30)
    await close_pool()
asyncio.run(main())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("langgraph", "langchain_core"))))
"""

FIRST_TURN_PROBE = r"""
import asyncio, sys, time
import function_app
from shared.conversations import run_turn
from shared.settings import get_settings

async def main():
    await run_turn(get_settings(), "bench/user/cold", "cold", message="what is 2+2")
asyncio.run(main())
print((time.time() - float(sys.argv[1])) * 1000)
"""

MEMORY_PROBE = r"""
import asyncio, json, sys
from shared.conversations import run_turn
from shared.settings import get_settings

def status(field):
    with open("/proc/self/status") as status_file:
        for line in status_file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field + " not found in /proc/self/status")

async def main(turns, threads):
    settings = get_settings()
    marks = {}
    for n in range(1, turns + 1):
        await run_turn(settings, "bench/user/memory", f"memory-{n % threads}", message="what is 2+2")
        if n == turns // 2:
            marks["half_rss"] = status("VmRSS")
            marks["half_peak"] = status("VmHWM")
        if n % 250 == 0:
            print(f"{n} turns, RSS {status('VmRSS') / 2**20:.1f} MiB", file=sys.stderr, flush=True)
    marks["end_rss"] = status("VmRSS")
    marks["end_peak"] = status("VmHWM")
    print(json.dumps(marks))
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def _python(probe: str, environment: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=ROOT,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"probe failed with exit code {completed.returncode}: {completed.stderr[-2000:]}")
    return completed.stdout.strip().splitlines()[-1]


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield the import, no-graph, first-turn and memory rows."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "AUTH_", "MODEL_"))}
    import_ms = [float(_python(IMPORT_PROBE, clean)) for _ in range(RUNS)]
    progress("%s: import function_app %.0f ms (median of %d)", BENCHMARK, sorted(import_ms)[RUNS // 2], RUNS)
    yield measured_row(
        BENCHMARK,
        "import function_app",
        "ms",
        import_ms,
        target=f"<= {IMPORT_TARGET_MS:.0f} ms",
        met=sorted(import_ms)[RUNS // 2] <= IMPORT_TARGET_MS,
    )

    with bench_database("cold_no_graph") as url:
        imported = json.loads(_python(NO_GRAPH_PROBE, bench_environment(url)))
    yield Row(
        benchmark=BENCHMARK,
        case="LangGraph modules imported by schema set-up and analytics queries",
        unit="modules",
        median=len(imported),
        minimum=len(imported),
        maximum=len(imported),
        runs=1,
        target="0",
        met=not imported,
        note=", ".join(imported[:5]) + (" ..." if len(imported) > 5 else ""),
    )

    first_turn_ms: list[float] = []
    for run in range(RUNS):
        with bench_database("cold_first_turn") as url:
            started = time.time()
            first_turn_ms.append(float(_python(FIRST_TURN_PROBE, bench_environment(url), f"{started:.6f}")))
        progress("%s: first turn %d/%d took %.0f ms", BENCHMARK, run + 1, RUNS, first_turn_ms[-1])
    yield measured_row(
        BENCHMARK,
        "process start to first turn, empty database",
        "ms",
        first_turn_ms,
        target=f"<= {FIRST_TURN_TARGET_MS:.0f} ms",
        met=sorted(first_turn_ms)[RUNS // 2] <= FIRST_TURN_TARGET_MS,
    )

    turns = QUICK_MEMORY_TURNS if quick else MEMORY_TURNS
    progress("%s: running %d turns in one process", BENCHMARK, turns)
    with bench_database("cold_memory") as url:
        marks = json.loads(_python(MEMORY_PROBE, bench_environment(url), str(turns), str(MEMORY_THREADS)))
    half = turns // 2
    yield Row(
        benchmark=BENCHMARK,
        case=f"peak RSS after {half} turns",
        unit="MiB",
        median=marks["half_peak"] / 2**20,
        minimum=marks["half_peak"] / 2**20,
        maximum=marks["half_peak"] / 2**20,
        runs=1,
        note=f"peak after {turns} turns {marks['end_peak'] / 2**20:.1f} MiB",
    )
    growth = marks["end_rss"] / marks["half_rss"] - 1
    yield Row(
        benchmark=BENCHMARK,
        case=f"RSS growth from turn {half} to turn {turns}",
        unit="ratio",
        median=growth,
        minimum=growth,
        maximum=growth,
        runs=1,
        target=f"< {RSS_GROWTH_TARGET:.0%}",
        met=growth < RSS_GROWTH_TARGET,
        note=f"RSS {marks['half_rss'] / 2**20:.1f} MiB at turn {half}, {marks['end_rss'] / 2**20:.1f} MiB at {turns}",
    )


if __name__ == "__main__":
    run_benchmark(__doc__ or BENCHMARK, measure)
