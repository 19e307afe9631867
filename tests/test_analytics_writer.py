"""The analytics write: exact totals under concurrency, and failures that never reach the caller."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared import conversations
from shared.analytics import writer
from shared.analytics.histogram import BUCKET_COUNT, LATENCY_BUCKET_BOUNDS_MS, bucket_index
from shared.analytics.recorder import Invocation
from shared.analytics.writer import (
    aggregate_invocations,
    flush_usage,
    lost_invocation_count,
    lost_write_count,
    write_usage,
)
from shared.database import close_pool, create_pool, get_pool
from shared.settings import ModelPrice, Settings

WORKERS = 8
FLUSHES_PER_WORKER = 100
INVOCATIONS_PER_FLUSH = 5


def run_writers(settings: Settings, batches_for: Any) -> list[BaseException]:
    """Run WORKERS threads, each with its own event loop and pool, flushing its batches in turn."""
    errors: list[BaseException] = []
    start = threading.Barrier(WORKERS, timeout=60)

    async def apply_schema_once() -> None:
        try:
            await get_pool(settings)
        finally:
            await close_pool()

    # Cold start is not what these tests measure, so the schema exists before the writers start.
    asyncio.run(apply_schema_once())

    async def worker(number: int) -> None:
        pool = await get_pool(settings)
        batches = batches_for(number)
        start.wait()
        try:
            for batch in batches:
                if not await flush_usage(settings, pool, batch):
                    raise AssertionError(f"worker {number} lost a write")
        finally:
            await close_pool()

    def thread_main(number: int) -> None:
        try:
            asyncio.run(worker(number))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer thread is still running after 120 s"
    return errors


def totals(database_url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT agent_id, invocation_count, success_count, error_count, total_input_tokens,"
            " total_output_tokens, total_latency_ms, min_latency_ms, max_latency_ms, latency_histogram,"
            " estimated_cost_usd FROM agent_usage_analytics"
        ).fetchall()
    return {row["agent_id"]: row for row in rows}


@pytest.fixture
def wide_settings(settings: Settings) -> Settings:
    return replace(settings, database_pool_max_size=3, analytics_write_timeout_ms=10_000)


def test_concurrent_writers_on_one_row_keep_exact_totals(wide_settings: Settings, database_url: str) -> None:
    day = datetime.now(UTC).date()

    def batches_for(worker: int) -> list[list[Invocation]]:
        return [
            [
                Invocation("hot", day, latency_ms=worker + i, succeeded=i != 0, input_tokens=3, output_tokens=2)
                for i in range(INVOCATIONS_PER_FLUSH)
            ]
            for _ in range(FLUSHES_PER_WORKER)
        ]

    lost_before = lost_write_count()
    errors = run_writers(wide_settings, batches_for)

    row = totals(database_url)["hot"]
    invocations = WORKERS * FLUSHES_PER_WORKER * INVOCATIONS_PER_FLUSH
    assert errors == []
    assert lost_write_count() == lost_before
    assert row["invocation_count"] == invocations
    assert row["error_count"] == WORKERS * FLUSHES_PER_WORKER
    assert row["success_count"] == invocations - WORKERS * FLUSHES_PER_WORKER
    assert row["total_input_tokens"] == 3 * invocations
    assert row["total_output_tokens"] == 2 * invocations
    assert row["min_latency_ms"] == 0
    assert row["max_latency_ms"] == WORKERS - 1 + INVOCATIONS_PER_FLUSH - 1
    assert sum(row["latency_histogram"]) == invocations


def test_concurrent_writers_on_many_rows_keep_exact_totals(wide_settings: Settings, database_url: str) -> None:
    day = datetime.now(UTC).date()
    agents = [f"agent-{n:02d}" for n in range(50)]

    def batches_for(worker: int) -> list[list[Invocation]]:
        rng = random.Random(worker)
        return [
            [
                Invocation(rng.choice(agents), day, latency_ms=7, succeeded=True, input_tokens=11, output_tokens=1)
                for _ in range(INVOCATIONS_PER_FLUSH)
            ]
            for _ in range(FLUSHES_PER_WORKER)
        ]

    expected: dict[str, int] = {}
    for worker in range(WORKERS):
        for batch in batches_for(worker):
            for invocation in batch:
                expected[invocation.agent_id] = expected.get(invocation.agent_id, 0) + 1

    lost_before = lost_write_count()
    errors = run_writers(wide_settings, batches_for)

    rows = totals(database_url)
    assert errors == []
    assert lost_write_count() == lost_before
    assert {agent: row["invocation_count"] for agent, row in rows.items()} == expected
    assert {agent: row["total_input_tokens"] for agent, row in rows.items()} == {a: 11 * n for a, n in expected.items()}


def test_aggregate_merges_same_day_and_agent(settings: Settings) -> None:
    priced = replace(settings, model_prices={"gpt-4o-mini": ModelPrice(0.15, 0.6)})
    day = date(2026, 3, 1)
    invocations = [
        Invocation("calculator", day, 40, True, 1_000, 100, "gpt-4o-mini"),
        Invocation("supervisor", day, 5, True, 10, 1, "gpt-4o-mini"),
        Invocation("calculator", day, 3_000, False, 2_000, 0, "gpt-4o-mini"),
        Invocation("calculator", day, 1, True, 7, 7, "unlisted-model"),
    ]

    rows = aggregate_invocations(priced, invocations)

    assert [(r.day, r.agent_id) for r in rows] == [(day, "calculator"), (day, "supervisor")]
    calculator = rows[0]
    assert calculator.invocation_count == 3
    assert (calculator.success_count, calculator.error_count) == (2, 1)
    assert (calculator.input_tokens, calculator.output_tokens) == (3_007, 107)
    assert (calculator.min_latency_ms, calculator.max_latency_ms, calculator.total_latency_ms) == (1, 3_000, 3_041)
    assert calculator.cost_usd == (Decimal("0.15") * 3_000 + Decimal("0.6") * 100) / 1_000_000
    assert calculator.unpriced_models == {"unlisted-model"}
    assert sum(calculator.histogram) == 3
    assert len(calculator.histogram) == BUCKET_COUNT


def test_bucket_bounds_are_inclusive() -> None:
    assert bucket_index(0) == 0
    assert bucket_index(LATENCY_BUCKET_BOUNDS_MS[0]) == 0
    assert bucket_index(LATENCY_BUCKET_BOUNDS_MS[0] + 1) == 1
    assert bucket_index(LATENCY_BUCKET_BOUNDS_MS[-1]) == BUCKET_COUNT - 2
    assert bucket_index(LATENCY_BUCKET_BOUNDS_MS[-1] + 1) == BUCKET_COUNT - 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def one_invocation() -> list[Invocation]:
    return [Invocation("calculator", datetime.now(UTC).date(), 12, True, 345, 67, "offline")]


async def test_flush_to_unreachable_server_is_logged_and_counted(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = replace(
        settings,
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
        database_pool_timeout_seconds=1.0,
        analytics_write_timeout_ms=300,
    )
    pool = create_pool(unreachable)
    await pool.open(wait=False)
    lost_before, invocations_before = lost_write_count(), lost_invocation_count()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.analytics.writer"):
            written = await flush_usage(unreachable, pool, one_invocation())
    finally:
        await pool.close()

    assert written is False
    assert lost_write_count() == lost_before + 1
    assert lost_invocation_count() == invocations_before + 1
    warnings = [r for r in caplog.records if r.name == "shared.analytics.writer"]
    assert len(warnings) == 1
    assert "lost the analytics write of 1 agent invocations" in warnings[0].getMessage()
    assert "calculator: 1 invocations, 0 errors, 345 input and 67 output tokens" in warnings[0].getMessage()


async def test_turn_succeeds_when_usage_table_is_missing(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    lost_before = lost_write_count()
    try:
        await get_pool(settings)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE agent_usage_analytics")
        with caplog.at_level(logging.WARNING, logger="shared.analytics.writer"):
            result = await conversations.run_turn(settings, "owner", "thread-1", message="what is 2+2")
    finally:
        await close_pool()

    assert result.status == "completed"
    assert result.messages[-1]["content"] == "Summary: 2+2 = 4"
    assert lost_write_count() == lost_before + 1
    assert any("UndefinedTable" in r.getMessage() for r in caplog.records)


async def test_turn_succeeds_when_usage_write_times_out(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    quick = replace(settings, analytics_write_timeout_ms=200)
    day = datetime.now(UTC).date()
    lost_before = lost_write_count()
    try:
        pool = await get_pool(quick)
        await flush_usage(quick, pool, [Invocation("supervisor", day, 1, True)])
        # Another transaction holds the supervisor's row, so the turn's upsert waits on its lock.
        with psycopg.connect(database_url) as blocker:
            blocker.execute("SELECT 1 FROM agent_usage_analytics WHERE agent_id = 'supervisor' FOR UPDATE")
            with caplog.at_level(logging.WARNING, logger="shared.analytics.writer"):
                started = asyncio.get_running_loop().time()
                result = await conversations.run_turn(quick, "owner", "thread-1", message="what is 2+2")
                elapsed = asyncio.get_running_loop().time() - started
            blocker.rollback()
    finally:
        await close_pool()

    assert result.status == "completed"
    assert lost_write_count() == lost_before + 1
    assert any("TimeoutError" in r.getMessage() for r in caplog.records)
    assert elapsed < 2.0
    assert totals(database_url)["supervisor"]["invocation_count"] == 1


class TcpProxy:
    """Forward 127.0.0.1 connections to the test server until ``stop``, which cuts them all."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for stream in self._writers:
            stream.transport.abort()
        await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_writer, server_writer]
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


async def test_turn_succeeds_when_database_stops_before_the_write(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The app reaches PostgreSQL through a proxy that is cut after the turn is saved, before the write."""
    server_port = int(database_url.rpartition(":")[2].split("/")[0])
    proxy = TcpProxy(server_port)
    await proxy.start()
    proxied = replace(
        settings,
        database_url=database_url.replace(f":{server_port}/", f":{proxy.port}/"),
        database_pool_timeout_seconds=1.0,
        analytics_write_timeout_ms=300,
    )

    # run_turn imports flush_usage when it runs, so this wrapper cuts the proxy right before the write.
    async def cut_then_flush(*args: Any, **kwargs: Any) -> bool:
        await proxy.stop()
        return await flush_usage(*args, **kwargs)

    monkeypatch.setattr(writer, "flush_usage", cut_then_flush)
    lost_before = lost_write_count()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.analytics.writer"):
            started = asyncio.get_running_loop().time()
            result = await conversations.run_turn(proxied, "owner", "thread-1", message="what is 2+2")
            elapsed = asyncio.get_running_loop().time() - started
    finally:
        await close_pool()

    assert result.status == "completed"
    assert result.messages[-1]["content"] == "Summary: 2+2 = 4"
    assert lost_write_count() == lost_before + 1
    assert any("lost the analytics write of 3 agent invocations" in r.getMessage() for r in caplog.records)
    assert elapsed < 3.0
    assert totals(database_url) == {}


async def test_write_sends_one_sync(settings: Settings, tmp_path: Path) -> None:
    """A write is one statement with one Sync message, so one network round trip.

    The first write on a connection also prepares the statement, in a round trip of its own.
    """
    single = replace(settings, database_pool_max_size=1)
    trace_file = tmp_path / "protocol.trace"
    rows = aggregate_invocations(single, one_invocation())
    try:
        pool = await get_pool(single)
        with trace_file.open("w") as trace:
            # The pool has one connection, so write_usage gets the one traced here.
            async with pool.connection() as conn:
                conn.pgconn.trace(trace.fileno())
            await write_usage(pool, rows, 2_000)
            await write_usage(pool, rows, 2_000)
            async with pool.connection() as conn:
                conn.pgconn.untrace()
    finally:
        await close_pool()

    # Each protocol message starts a line: time, F (frontend) or B (backend), length, type, fields.
    # A query's own line breaks continue the Parse message on lines without tabs.
    lines = trace_file.read_text().splitlines()
    insert_line = next(i for i, line in enumerate(lines) if "INSERT INTO agent_usage_analytics" in line)
    parse = next(lines[i] for i in range(insert_line, -1, -1) if "\tParse\t" in lines[i])
    statement = parse.split("\t")[4].split('"')[1]
    messages = [line.split("\t") for line in lines if line.count("\t") >= 3]
    binds = [i for i, m in enumerate(messages) if m[3] == "Bind" and f'"{statement}"' in m[4]]
    second = binds[1]
    answered = next(i for i in range(second, len(messages)) if messages[i][3] == "ReadyForQuery")
    write = messages[second : answered + 1]
    assert len(binds) == 2
    assert [m[3] for m in write if m[1] == "F"] == ["Bind", "Describe", "Execute", "Sync"]
    assert any("INSERT 0 1" in "".join(m[4:]) for m in write)
