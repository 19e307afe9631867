"""Conversation retention in the nightly job: idle threads deleted or compacted, active ones untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared import conversations
from shared.database import close_pool, load_migrations
from shared.graph import supervisor
from shared.maintenance import run_maintenance
from shared.settings import Settings
from tests.conftest import ROOT

# Whole seconds, so the timestamps written below compare exactly with the boundaries.
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def frequent_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write a full messages snapshot every 6 updates, so a few turns leave checkpoints to compact."""
    # The state's annotations are strings, evaluated when a graph is built, so the constant is read then.
    monkeypatch.setattr(supervisor, "MESSAGES_SNAPSHOT_FREQUENCY", 6)


def stored(thread_id: str) -> str:
    """Return the stored id of the test owner's thread ``thread_id``."""
    return conversations.storage_thread_id("owner", thread_id)


def set_updated_at(database_url: str, thread_id: str, updated_at: datetime) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE threads SET updated_at = %s WHERE thread_id = %s", (updated_at, stored(thread_id)))


def thread_row(database_url: str, thread_id: str) -> dict[str, Any] | None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM threads WHERE thread_id = %s", (stored(thread_id),)).fetchone()


def checkpoint_count(database_url: str, thread_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (stored(thread_id),)).fetchone()
    assert row is not None
    return int(row[0])


def visible(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


async def test_idle_threads_deleted_at_exact_boundary(settings: Settings, database_url: str) -> None:
    no_compaction = replace(settings, thread_compact_after_days=0)
    idle_limit = NOW - timedelta(days=settings.thread_delete_after_days)
    try:
        for thread_id in ("just-outside", "just-inside", "fresh", "idle-but-running"):
            await conversations.run_turn(settings, "owner", thread_id, message="what is 2+2")
        set_updated_at(database_url, "just-outside", idle_limit - timedelta(seconds=1))
        set_updated_at(database_url, "just-inside", idle_limit)
        set_updated_at(database_url, "idle-but-running", idle_limit - timedelta(days=30))
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE threads SET lease_until = now() + interval '1 minute', run_id = gen_random_uuid()"
                " WHERE thread_id = %s",
                (stored("idle-but-running"),),
            )
        summary = await run_maintenance(no_compaction, now=NOW)
    finally:
        await close_pool()

    assert summary.threads_deleted == 1
    assert thread_row(database_url, "just-outside") is None
    assert checkpoint_count(database_url, "just-outside") == 0
    for kept in ("just-inside", "fresh", "idle-but-running"):
        assert thread_row(database_url, kept) is not None
        assert checkpoint_count(database_url, kept) > 0
    running = thread_row(database_url, "idle-but-running")
    assert running is not None
    assert running["lease_until"] > datetime.now(UTC)


@pytest.mark.usefixtures("frequent_snapshots")
async def test_compacted_thread_keeps_conversation_and_continues(settings: Settings, database_url: str) -> None:
    try:
        for message in ("what is 1+1", "what is 2+2; what is 3+3", "what time is it in UTC"):
            await conversations.run_turn(settings, "owner", "long", message=message)
        before = await conversations.get_thread(settings, "owner", "long")
        checkpoints_before = checkpoint_count(database_url, "long")
        set_updated_at(database_url, "long", NOW - timedelta(days=8))

        first = await run_maintenance(settings, now=NOW)
        after = await conversations.get_thread(settings, "owner", "long")
        checkpoints_after = checkpoint_count(database_url, "long")
        second = await run_maintenance(settings, now=NOW)

        turn = await conversations.run_turn(settings, "owner", "long", message="what is 5*5")
        continued = await conversations.get_thread(settings, "owner", "long")
        # Eight days later: the turn after the compaction makes the thread due again.
        third = await run_maintenance(settings, now=NOW + timedelta(days=8))
    finally:
        await close_pool()

    assert first.threads_compacted == 1
    assert checkpoints_after < checkpoints_before
    assert visible(after.messages) == visible(before.messages)
    assert second.threads_compacted == 0
    assert turn.status == "completed"
    assert visible(continued.messages)[: len(before.messages)] == visible(before.messages)
    assert ("assistant", "Summary: 5*5 = 25") in visible(continued.messages)
    assert third.threads_compacted == 1
    row = thread_row(database_url, "long")
    assert row is not None
    assert row["compacted_at"] is not None
    assert row["lease_until"] is None


@pytest.mark.usefixtures("frequent_snapshots")
async def test_pending_interrupt_resumes_after_compaction(settings: Settings, database_url: str) -> None:
    try:
        for message in ("what is 1+1", "what is 2+2; what is 3+3"):
            await conversations.run_turn(settings, "owner", "booking", message=message)
        first = await conversations.run_turn(settings, "owner", "booking", message="book a meeting on 2026-12-24")
        set_updated_at(database_url, "booking", NOW - timedelta(days=8))
        summary = await run_maintenance(settings, now=NOW)
        pending = await conversations.get_thread(settings, "owner", "booking")
        resumed = await conversations.run_turn(settings, "owner", "booking", resume={"approved": True}, is_resume=True)
    finally:
        await close_pool()

    assert first.status == "interrupted"
    assert summary.threads_compacted == 1
    assert pending.status == "interrupted"
    assert pending.interrupts[0]["id"] == first.interrupts[0]["id"]
    assert resumed.status == "completed"
    assert any("Booked" in (m["content"] or "") for m in resumed.messages)


async def test_zero_days_turns_thread_retention_off(settings: Settings, database_url: str) -> None:
    off = replace(settings, thread_delete_after_days=0, thread_compact_after_days=0)
    try:
        await conversations.run_turn(settings, "owner", "old", message="what is 2+2")
        set_updated_at(database_url, "old", NOW - timedelta(days=3_000))
        summary = await run_maintenance(off, now=NOW)
    finally:
        await close_pool()

    assert summary.threads_deleted == 0
    assert summary.threads_compacted == 0
    row = thread_row(database_url, "old")
    assert row is not None
    assert row["compacted_at"] is None


@pytest.mark.slow
def test_migrate_and_maintenance_commands(database_url: str) -> None:
    environment = {**os.environ, "DATABASE_URL": database_url}

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first, second, maintenance = run("migrate.py"), run("migrate.py"), run("run_maintenance.py")

    assert first.returncode == 0, first.stderr
    every_version = ", ".join(f"{migration.version:04d}" for migration in load_migrations())
    assert first.stdout.strip() == f"applied migrations {every_version}"
    assert second.stdout.strip() == "the schema is up to date"
    assert maintenance.returncode == 0, maintenance.stderr
    assert maintenance.stdout.startswith("rolled up 0 daily usage rows of 0 months")
