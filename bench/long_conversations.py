"""Long conversations: turn latency and bytes written per turn as a thread grows, then compaction.

One PostgreSQL thread (through the service layer, ``run_turn``) and one InMemorySaver thread (the
same compiled graph) grow side by side. At each length in ``LENGTHS`` the next ``RUNS`` turns are
timed, alternating between the two, and the bytes each PostgreSQL turn adds to the checkpoint
tables are recorded (rows, blobs and writes, uncompressed).

Bytes per turn are reported two ways. The median over the timed turns is the steady cost. The
amortized cost adds the last full snapshot of the message list, spread over the turns since the
one before it; a turn counts as a snapshot when it writes more than ``SNAPSHOT_FACTOR`` times the
median turn of the thread. Before any snapshot the two are equal.

At the end the compaction that the nightly job runs on idle threads (``compact_threads``) runs on
the PostgreSQL thread, and the bytes it still holds are compared with the serialized size of its
messages. Targets: at the longest length the PostgreSQL turn is at most 1.3x the memory turn;
amortized bytes per turn there are at most 3x those at length 10; after compaction the thread
holds at most 3x its messages' serialized size.
"""

from __future__ import annotations

import statistics
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    bench_database,
    bench_environment,
    measured_row,
    progress,
    run_benchmark,
    thread_stored_bytes,
    time_call,
)

BENCHMARK = "long conversations"
LENGTHS = (1, 10, 100, 500)
QUICK_LENGTHS = (1, 3, 6)
RUNS = 5
SNAPSHOT_FACTOR = 10
LATENCY_TARGET = 1.3
BYTES_TARGET = 3.0
COMPACTED_TARGET = 3.0
OWNER = "bench/user/long-conversations"
MESSAGE = "what is 2+2"


def _amortized_bytes(turn_bytes: list[int]) -> tuple[float, int]:
    """Return the amortized bytes per turn of the thread so far and how many snapshot turns it had."""
    steady = statistics.median(turn_bytes)
    snapshots = [i for i, b in enumerate(turn_bytes) if b > SNAPSHOT_FACTOR * steady]
    if not snapshots:
        return steady, 0
    last = snapshots[-1]
    since = last - snapshots[-2] if len(snapshots) > 1 else last + 1
    return steady + turn_bytes[last] / since, len(snapshots)


async def measure(quick: bool) -> AsyncIterator[Row]:
    """Yield latency and bytes rows per length, the compaction row and the target rows."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from shared import conversations
    from shared.compaction import compact_threads
    from shared.database import close_pool, get_pool
    from shared.graph.supervisor import compile_supervisor
    from shared.settings import load_settings

    lengths = QUICK_LENGTHS if quick else LENGTHS
    with bench_database("long_conversations") as url:
        settings = load_settings(bench_environment(url))
        pool = await get_pool(settings)
        memory_graph = compile_supervisor(settings, InMemorySaver())
        postgres_thread = f"long-{uuid.uuid4().hex[:8]}"
        # The service stores a thread under an id scoped by its owner; the byte counts read that id.
        stored_thread = conversations.storage_thread_id(OWNER, postgres_thread)
        memory_config = {"configurable": {"thread_id": postgres_thread}}

        async def memory_turn() -> object:
            return await memory_graph.ainvoke({"messages": [HumanMessage(MESSAGE)]}, memory_config, durability="exit")

        async def postgres_turn() -> object:
            return await conversations.run_turn(settings, OWNER, postgres_thread, message=MESSAGE)

        turn_bytes: list[int] = []
        stored = 0

        async def postgres_turn_counting_bytes() -> float:
            nonlocal stored
            elapsed = await time_call(postgres_turn)
            now_stored = await thread_stored_bytes(pool, stored_thread)
            turn_bytes.append(now_stored - stored)
            stored = now_stored
            return elapsed

        done = 0
        latency: dict[int, tuple[list[float], list[float]]] = {}
        amortized: dict[int, float] = {}
        for length in lengths:
            while done < length:
                await memory_turn()
                await postgres_turn_counting_bytes()
                done += 1
                if done % 50 == 0:
                    progress("%s: grew both threads to %d turns", BENCHMARK, done)
            memory_ms: list[float] = []
            postgres_ms: list[float] = []
            window_start = len(turn_bytes)
            for _ in range(RUNS):
                memory_ms.append(await time_call(memory_turn))
                postgres_ms.append(await postgres_turn_counting_bytes())
                done += 1
            latency[length] = (memory_ms, postgres_ms)
            amortized[length], snapshots = _amortized_bytes(turn_bytes)
            window = turn_bytes[window_start:]
            progress(
                "%s: after %d turns, memory %.1f ms, postgres %.1f ms, %d bytes per turn",
                BENCHMARK,
                length,
                statistics.median(memory_ms),
                statistics.median(postgres_ms),
                statistics.median(window),
            )
            baseline = statistics.median(memory_ms)
            yield measured_row(BENCHMARK, f"memory, {length} earlier turns", "ms/turn", memory_ms, baseline="memory")
            row = measured_row(
                BENCHMARK, f"postgres, {length} earlier turns", "ms/turn", postgres_ms, baseline="memory"
            )
            row.ratio = row.median / baseline
            yield row
            yield measured_row(
                BENCHMARK,
                f"bytes written, {length} earlier turns",
                "bytes/turn",
                window,
                note=f"amortized {amortized[length]:.0f} bytes/turn with {snapshots} snapshot turns so far",
            )

        state = await memory_graph.aget_state(memory_config)
        progress("%s: compacting the postgres thread", BENCHMARK)
        before_compaction = await thread_stored_bytes(pool, stored_thread)
        await compact_threads(pool, [stored_thread])
        after_compaction = await thread_stored_bytes(pool, stored_thread)
        view = await conversations.get_thread(settings, OWNER, postgres_thread)
        await close_pool()

    messages = state.values["messages"]
    message_bytes = len(JsonPlusSerializer().dumps_typed(messages)[1])
    if len(view.messages) != len(messages):
        raise RuntimeError(
            f"compaction changed the thread: {len(view.messages)} messages after it, {len(messages)} expected"
        )

    longest = lengths[-1]
    memory_ms, postgres_ms = latency[longest]
    ratio = statistics.median(postgres_ms) / statistics.median(memory_ms)
    yield measured_row(
        BENCHMARK,
        f"postgres / memory latency, {longest} earlier turns",
        "ratio",
        [p / m for p, m in zip(postgres_ms, memory_ms, strict=True)],
        baseline="memory",
        ratio=ratio,
        target=f"<= {LATENCY_TARGET}x",
        met=ratio <= LATENCY_TARGET,
    )
    reference = 10 if 10 in amortized else lengths[1]
    bytes_ratio = amortized[longest] / amortized[reference]
    yield Row(
        benchmark=BENCHMARK,
        case=f"amortized bytes per turn, {longest} / {reference} earlier turns",
        unit="ratio",
        median=bytes_ratio,
        minimum=bytes_ratio,
        maximum=bytes_ratio,
        runs=1,
        baseline=f"{reference} earlier turns",
        ratio=bytes_ratio,
        target=f"<= {BYTES_TARGET}x",
        met=bytes_ratio <= BYTES_TARGET,
    )
    compacted_ratio = after_compaction / message_bytes
    yield Row(
        benchmark=BENCHMARK,
        case=f"stored after compaction / messages, {done} turns",
        unit="ratio",
        median=compacted_ratio,
        minimum=compacted_ratio,
        maximum=compacted_ratio,
        runs=1,
        baseline="serialized messages",
        ratio=compacted_ratio,
        target=f"<= {COMPACTED_TARGET}x",
        met=compacted_ratio <= COMPACTED_TARGET,
        note=(
            f"{len(messages)} messages of {message_bytes} bytes; "
            f"thread held {before_compaction} bytes before compaction, {after_compaction} after"
        ),
    )


if __name__ == "__main__":
    run_benchmark(__doc__ or BENCHMARK, measure)
