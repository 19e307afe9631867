"""Delta-stored message history: long threads, snapshots, restarts, approvals and compaction."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator

import psycopg
import pytest
from langgraph.channels.delta import DeltaChannel

from shared import conversations
from shared.compaction import compact_threads
from shared.database import close_pool, get_pool
from shared.graph import supervisor
from shared.settings import Settings

OWNER = "tenant/user/long-conversations"
# Small enough that a few turns cross a snapshot: a turn makes about four updates to ``messages``.
TEST_SNAPSHOT_FREQUENCY = 6


@pytest.fixture
async def frequent_snapshots(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Make the messages channel write a full snapshot every TEST_SNAPSHOT_FREQUENCY updates."""
    # The state's annotations are strings, evaluated when a graph is built, so the constant is read then.
    monkeypatch.setattr(supervisor, "MESSAGES_SNAPSHOT_FREQUENCY", TEST_SNAPSHOT_FREQUENCY)
    channel = typing.get_type_hints(supervisor.SupervisorState, include_extras=True)["messages"].__metadata__[0]
    assert isinstance(channel, DeltaChannel)
    assert channel.snapshot_frequency == TEST_SNAPSHOT_FREQUENCY
    yield
    await close_pool()


@pytest.fixture
async def closing_pool() -> AsyncIterator[None]:
    yield
    await close_pool()


async def say(settings: Settings, thread_id: str, message: str) -> conversations.TurnResult:
    return await conversations.run_turn(settings, OWNER, thread_id, message=message)


def stored_bytes(database_url: str, thread_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """
            SELECT (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %(t)s)
                 + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(t)s)
            """,
            {"t": conversations.storage_thread_id(OWNER, thread_id)},
        ).fetchone()
    assert row is not None
    return int(row[0])


def user_messages(view: conversations.ThreadView) -> list[str]:
    return [m["content"] for m in view.messages if m["role"] == "user"]


@pytest.mark.usefixtures("closing_pool")
async def test_turn_writes_do_not_grow_with_history(settings: Settings, database_url: str) -> None:
    await say(settings, "grow", "what is 0 + 1?")
    written = [0]
    for n in range(1, 12):
        before = stored_bytes(database_url, "grow")
        await say(settings, "grow", f"what is {n} + 1?")
        written.append(stored_bytes(database_url, "grow") - before)

    # Without a delta channel the twelfth turn writes the whole list again, about 10x the second.
    assert written[11] < 2 * written[1]


@pytest.mark.usefixtures("frequent_snapshots")
async def test_history_survives_snapshots_and_restart(settings: Settings) -> None:
    questions = [f"what is {n} * 3?" for n in range(8)]
    for question in questions[:5]:
        await say(settings, "restart", question)

    # A new pool compiles a new graph with new savers, as a restarted worker does.
    await close_pool()
    for question in questions[5:]:
        result = await say(settings, "restart", question)
        assert [m["content"] for m in result.messages if m["role"] == "user"] == [question]

    view = await conversations.get_thread(settings, OWNER, "restart")
    assert user_messages(view) == questions
    assert f"{7} * 3 = 21" in [m["content"] for m in view.messages]
    assert view.status == "idle"


@pytest.mark.usefixtures("frequent_snapshots")
async def test_compaction_keeps_every_message(settings: Settings, database_url: str) -> None:
    questions = [f"what is {n} - 1?" for n in range(9)]
    for question in questions:
        await say(settings, "compact", question)
    before = await conversations.get_thread(settings, OWNER, "compact")
    bytes_before = stored_bytes(database_url, "compact")

    await compact_threads(await get_pool(settings), [conversations.storage_thread_id(OWNER, "compact")])

    after = await conversations.get_thread(settings, OWNER, "compact")
    assert after.messages == before.messages
    assert stored_bytes(database_url, "compact") < bytes_before

    await say(settings, "compact", "what is 10 - 1?")
    latest = await conversations.get_thread(settings, OWNER, "compact")
    assert user_messages(latest) == [*questions, "what is 10 - 1?"]


@pytest.mark.usefixtures("frequent_snapshots")
async def test_compacting_twice_changes_nothing(settings: Settings, database_url: str) -> None:
    for n in range(6):
        await say(settings, "twice", f"what is {n} + 5?")
    pool = await get_pool(settings)

    await compact_threads(pool, [conversations.storage_thread_id(OWNER, "twice")])
    once = stored_bytes(database_url, "twice")
    await compact_threads(pool, [conversations.storage_thread_id(OWNER, "twice")])

    assert stored_bytes(database_url, "twice") == once
    view = await conversations.get_thread(settings, OWNER, "twice")
    assert len(user_messages(view)) == 6


@pytest.mark.usefixtures("frequent_snapshots")
async def test_approval_resumes_after_compaction(settings: Settings) -> None:
    for n in range(4):
        await say(settings, "approval", f"what is {n} + 2?")
    first = await say(settings, "approval", "book a design review on 2026-12-24")
    assert first.status == "interrupted"

    await compact_threads(await get_pool(settings), [conversations.storage_thread_id(OWNER, "approval")])
    pending = await conversations.get_thread(settings, OWNER, "approval")
    assert pending.status == "interrupted"
    assert pending.interrupts[0]["id"] == first.interrupts[0]["id"]

    resumed = await conversations.run_turn(settings, OWNER, "approval", resume=True, is_resume=True)
    assert resumed.status == "completed"
    replies = [m["content"] for m in resumed.messages if m["role"] == "assistant"]
    assert any(text.startswith("Booked 'design review' on 2026-12-24") for text in replies)
    view = await conversations.get_thread(settings, OWNER, "approval")
    assert len(user_messages(view)) == 5
    assert view.status == "idle"
