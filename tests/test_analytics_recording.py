"""Agent invocations recorded from real supervisor runs and written to PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from psycopg.rows import dict_row

from shared import conversations
from shared.analytics.recorder import Invocation, UsageRecorder
from shared.analytics.writer import flush_usage, lost_write_count
from shared.database import APPLICATION_NAME, close_pool, get_pool
from shared.errors import UpstreamTimeout
from shared.graph.offline import OfflineChatModel
from shared.settings import ModelPrice, Settings, reset_settings_cache
from tests.apphost import bearer, call_function


def usage_by_agent(database_url: str) -> dict[str, dict[str, Any]]:
    """Return the daily usage rows summed per agent."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            """
            SELECT agent_id, sum(invocation_count)::bigint AS invocations, sum(success_count)::bigint AS successes,
                   sum(error_count)::bigint AS errors, sum(total_input_tokens)::bigint AS input_tokens,
                   sum(total_output_tokens)::bigint AS output_tokens, sum(estimated_cost_usd) AS cost,
                   min(min_latency_ms) AS min_latency, sum(total_latency_ms)::bigint AS total_latency
              FROM agent_usage_analytics GROUP BY agent_id
            """
        ).fetchall()
    return {row["agent_id"]: row for row in rows}


@pytest.fixture
def reported_usage(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[tuple[int, int]]]]:
    """Record the usage_metadata each offline model call reports, per agent."""
    reported: dict[str, list[tuple[int, int]]] = defaultdict(list)
    original = OfflineChatModel._respond

    def spy(self: OfflineChatModel, messages: Any, tools: Any) -> Any:
        result = original(self, messages, tools)
        usage = result.generations[0].message.usage_metadata
        reported[self.agent].append((usage["input_tokens"], usage["output_tokens"]))
        return result

    monkeypatch.setattr(OfflineChatModel, "_respond", spy)
    yield reported


def reported_tokens(reported: dict[str, list[tuple[int, int]]], agent: str) -> tuple[int, int]:
    return sum(i for i, _ in reported[agent]), sum(o for _, o in reported[agent])


async def test_supervisor_run_records_each_agent(
    settings: Settings, database_url: str, reported_usage: dict[str, list[tuple[int, int]]]
) -> None:
    priced = replace(settings, model_prices={"offline": ModelPrice(input_per_million=2.0, output_per_million=8.0)})
    try:
        result = await conversations.run_turn(priced, "owner", "thread-1", message="what is 2+2")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert result.status == "completed"
    assert set(usage) == {"supervisor", "calculator"}
    assert usage["supervisor"]["invocations"] == 2
    assert usage["calculator"]["invocations"] == 1
    assert usage["supervisor"]["errors"] == 0
    assert usage["calculator"]["successes"] == 1
    for agent in ("supervisor", "calculator"):
        input_tokens, output_tokens = reported_tokens(reported_usage, agent)
        assert input_tokens > 0
        assert (usage[agent]["input_tokens"], usage[agent]["output_tokens"]) == (input_tokens, output_tokens)
        expected_cost = (Decimal(2) * input_tokens + Decimal(8) * output_tokens) / 1_000_000
        assert usage[agent]["cost"] == expected_cost
        assert usage[agent]["min_latency"] >= 0
    assert result.input_tokens == sum(reported_tokens(reported_usage, a)[0] for a in reported_usage)
    assert result.output_tokens == sum(reported_tokens(reported_usage, a)[1] for a in reported_usage)


async def test_same_agent_twice_in_one_turn_counts_two(
    settings: Settings, database_url: str, reported_usage: dict[str, list[tuple[int, int]]]
) -> None:
    try:
        lost_before = lost_write_count()
        result = await conversations.run_turn(settings, "owner", "thread-1", message="what is 1+1; what is 2+2")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert result.status == "completed"
    assert lost_write_count() == lost_before
    assert usage["calculator"]["invocations"] == 2
    assert usage["supervisor"]["invocations"] == 3
    assert len(reported_usage["calculator"]) == 4
    assert (usage["calculator"]["input_tokens"], usage["calculator"]["output_tokens"]) == reported_tokens(
        reported_usage, "calculator"
    )


async def test_interrupt_and_resume_are_not_errors(settings: Settings, database_url: str) -> None:
    try:
        first = await conversations.run_turn(settings, "owner", "thread-1", message="book a meeting on 2026-12-24")
        after_interrupt = usage_by_agent(database_url)
        second = await conversations.run_turn(settings, "owner", "thread-1", resume={"approved": True}, is_resume=True)
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert first.status == "interrupted"
    assert after_interrupt["scheduler"]["invocations"] == 1
    assert after_interrupt["scheduler"]["errors"] == 0
    assert second.status == "completed"
    assert usage["scheduler"]["invocations"] == 2
    assert usage["scheduler"]["errors"] == 0
    assert usage["supervisor"]["errors"] == 0


async def test_timed_out_run_records_open_invocations_as_errors(settings: Settings, database_url: str) -> None:
    slow = replace(settings, offline_model_delay_ms=1_500, run_timeout_seconds=1.0)
    try:
        with pytest.raises(UpstreamTimeout):
            await conversations.run_turn(slow, "owner", "thread-1", message="what is 2+2")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert usage["supervisor"]["invocations"] == 1
    assert usage["supervisor"]["errors"] == 1
    assert usage["supervisor"]["total_latency"] >= 900


async def test_concurrent_turns_touching_shared_rows_count_exactly(
    settings: Settings, database_url: str, reported_usage: dict[str, list[tuple[int, int]]]
) -> None:
    wide = replace(settings, database_pool_max_size=20)
    messages = ["what is 1+1; what time is it in UTC", "what time is it in UTC; what is 1+1"]
    try:
        lost_before = lost_write_count()
        results = await asyncio.gather(
            *(conversations.run_turn(wide, "owner", f"thread-{i}", message=messages[i % 2]) for i in range(20))
        )
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert [r.status for r in results] == ["completed"] * 20
    assert lost_write_count() == lost_before
    assert usage["calculator"]["invocations"] == 20
    assert usage["scheduler"]["invocations"] == 20
    assert usage["supervisor"]["invocations"] == 60
    for agent in ("supervisor", "calculator", "scheduler"):
        assert (usage[agent]["input_tokens"], usage[agent]["output_tokens"]) == reported_tokens(reported_usage, agent)


async def test_concurrent_flushes_in_random_order_count_exactly(settings: Settings, database_url: str) -> None:
    wide = replace(settings, database_pool_max_size=20)
    day = datetime.now(UTC).date()
    rng = random.Random(8)

    def request_invocations(number: int) -> list[Invocation]:
        agents = ["a", "b", "c"]
        rng.shuffle(agents)
        return [Invocation(agent, day, 10 + number, True, 100 + number, 10 + number, "offline") for agent in agents]

    batches = [request_invocations(n) for n in range(20)]
    try:
        pool = await get_pool(wide)
        lost_before = lost_write_count()
        written = await asyncio.gather(*(flush_usage(wide, pool, batch) for batch in batches))
        written_again = await asyncio.gather(*(flush_usage(wide, pool, batch) for batch in batches))
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert all(written + written_again)
    assert lost_write_count() == lost_before
    for agent in ("a", "b", "c"):
        assert usage[agent]["invocations"] == 40
        assert usage[agent]["input_tokens"] == 2 * sum(100 + n for n in range(20))
        assert usage[agent]["output_tokens"] == 2 * sum(10 + n for n in range(20))


async def test_turn_after_pool_backends_were_terminated_counts_once(
    settings: Settings, database_url: str, server_url: str
) -> None:
    try:
        await conversations.run_turn(settings, "owner", "thread-1", message="what is 2+2")
        with psycopg.connect(server_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = %s",
                (APPLICATION_NAME, database_url.rpartition("/")[2]),
            ).fetchone()
        second = await conversations.run_turn(settings, "owner", "thread-1", message="what is 3+3")
        view = await conversations.get_thread(settings, "owner", "thread-1")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert killed is not None
    assert killed[0] >= 1
    assert second.status == "completed"
    assert [m["content"] for m in view.messages if m["role"] == "user"] == ["what is 2+2", "what is 3+3"]
    assert usage["calculator"]["invocations"] == 2
    assert usage["supervisor"]["invocations"] == 4


def chain_metadata(namespace: str) -> dict[str, Any]:
    return {"langgraph_checkpoint_ns": namespace}


def drive_node(recorder: UsageRecorder, namespace: str, tokens: tuple[int, int]) -> None:
    """Feed the recorder the callbacks of one node run with one model call inside it."""
    node_run, model_run = uuid.uuid4(), uuid.uuid4()
    recorder.on_chain_start({}, {}, run_id=node_run, metadata=chain_metadata(namespace))
    recorder.on_chat_model_start({}, [[]], run_id=model_run, metadata=chain_metadata(f"{namespace}|agent:1"))
    message = AIMessage(
        content="ok",
        usage_metadata={"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)},
        response_metadata={"model_name": "offline"},
    )
    recorder.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]), run_id=model_run)
    recorder.on_chain_end({}, run_id=node_run)


def test_invocation_day_is_its_utc_start_date() -> None:
    starts = iter(
        [
            datetime(2025, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
            datetime(2026, 1, 1, 0, 0, 0, 1_000, tzinfo=UTC),
            # 00:30 in UTC+1 is still 23:30 on the previous day in UTC.
            datetime(2026, 1, 2, 0, 30, tzinfo=timezone(timedelta(hours=1))),
        ]
    )
    recorder = UsageRecorder(agent_ids=frozenset({"supervisor", "calculator"}), clock=lambda: next(starts))

    drive_node(recorder, "supervisor:task-1", (10, 1))
    drive_node(recorder, "calculator:task-2", (20, 2))
    drive_node(recorder, "supervisor:task-3", (30, 3))

    days = [(i.agent_id, i.day) for i in recorder.invocations]
    assert days == [
        ("supervisor", date(2025, 12, 31)),
        ("calculator", date(2026, 1, 1)),
        ("supervisor", date(2026, 1, 1)),
    ]
    assert [(i.input_tokens, i.output_tokens) for i in recorder.invocations] == [(10, 1), (20, 2), (30, 3)]


def test_recorder_ignores_nodes_that_are_not_agents() -> None:
    recorder = UsageRecorder(agent_ids=frozenset({"supervisor"}))

    drive_node(recorder, "tools:task-1", (10, 1))
    drive_node(recorder, "supervisor:task-2", (5, 1))

    assert [i.agent_id for i in recorder.invocations] == ["supervisor"]
    assert recorder.input_tokens == 5


def test_node_error_is_error_but_handoff_is_not() -> None:
    from langgraph.errors import GraphInterrupt, ParentCommand
    from langgraph.types import Command

    recorder = UsageRecorder(agent_ids=frozenset({"supervisor", "calculator", "scheduler"}))
    outcomes: list[BaseException] = [
        ParentCommand(Command(graph=Command.PARENT, goto="calculator")),
        GraphInterrupt(()),
        ValueError("the model failed"),
    ]
    for number, (agent, error) in enumerate(zip(["supervisor", "scheduler", "calculator"], outcomes, strict=True)):
        run_id = uuid.uuid4()
        recorder.on_chain_start({}, {}, run_id=run_id, metadata=chain_metadata(f"{agent}:task-{number}"))
        recorder.on_chain_error(error, run_id=run_id)

    assert [(i.agent_id, i.succeeded) for i in recorder.invocations] == [
        ("supervisor", True),
        ("scheduler", True),
        ("calculator", False),
    ]


def test_close_unfinished_records_open_nodes_as_errors() -> None:
    recorder = UsageRecorder(agent_ids=frozenset({"supervisor"}))
    recorder.on_chain_start({}, {}, run_id=uuid.uuid4(), metadata=chain_metadata("supervisor:task-1"))

    recorder.close_unfinished()
    recorder.close_unfinished()

    assert [(i.agent_id, i.succeeded) for i in recorder.invocations] == [("supervisor", False)]


async def test_concurrent_chat_requests_all_reply_200(
    app_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    reported_usage: dict[str, list[tuple[int, int]]],
) -> None:
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "20")
    reset_settings_cache()
    messages = ["what is 1+1; what time is it in UTC", "what time is it in UTC; what is 1+1"]
    lost_before = lost_write_count()

    responses = await asyncio.gather(
        *(
            call_function(
                "invoke_thread",
                method="POST",
                route_params={"threadId": f"thread-{i}"},
                body={"message": messages[i % 2]},
                headers=bearer(),
            )
            for i in range(20)
        )
    )

    usage = usage_by_agent(app_environment["DATABASE_URL"])
    assert [r.status_code for r in responses] == [200] * 20
    assert lost_write_count() == lost_before
    assert usage["calculator"]["invocations"] == 20
    assert usage["scheduler"]["invocations"] == 20
    assert usage["supervisor"]["invocations"] == 60
    for agent in ("supervisor", "calculator", "scheduler"):
        assert (usage[agent]["input_tokens"], usage[agent]["output_tokens"]) == reported_tokens(reported_usage, agent)
