"""One run per thread, leases and run timeouts, through the registered functions and the service.

Every test runs on a real PostgreSQL database of its own, with the offline model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import psycopg
import pytest

from shared import conversations
from shared.errors import ThreadBusy
from shared.settings import Settings, get_settings, reset_settings_cache
from tests.apphost import bearer, call_function, response_json, stored_thread_id

pytestmark = pytest.mark.usefixtures("app_environment")

OWNER = "tenant/user/reliability"


def use_settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    return get_settings()


async def invoke(thread_id: str, body: Any) -> tuple[int, Any, dict[str, str]]:
    response = await call_function(
        "invoke_thread", method="POST", route_params={"threadId": thread_id}, body=body, headers=bearer()
    )
    headers = {name.lower(): value for name, value in response.headers.items()}
    headers["content-type"] = response.mimetype
    return response.status_code, response_json(response), headers


async def read_thread(thread_id: str) -> dict[str, Any]:
    response = await call_function("get_thread", route_params={"threadId": thread_id}, headers=bearer())
    assert response.status_code == 200, response.get_body()
    body: dict[str, Any] = response_json(response)
    return body


def contents(messages: list[dict[str, Any]], role: str) -> list[str]:
    return [m["content"] for m in messages if m["role"] == role]


def checkpoint_parents(database_url: str, thread_id: str) -> list[str | None]:
    """Return the parent id of every top-level checkpoint of the thread stored as ``thread_id``."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT parent_checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''",
            (thread_id,),
        ).fetchall()
    return [row[0] for row in rows]


def assert_linear_history(database_url: str, thread_id: str) -> None:
    """Check that no checkpoint of the thread has two children, so its history never forked."""
    parents = checkpoint_parents(database_url, thread_id)
    assert parents, f"thread {thread_id!r} has no checkpoint"
    assert len(parents) == len(set(parents)), f"thread {thread_id!r} forked: parents {parents}"


async def connections_in_use() -> int:
    from shared.database import get_pool

    stats = (await get_pool(get_settings())).get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_concurrent_invokes_run_one_and_409_other(
    monkeypatch: pytest.MonkeyPatch, app_environment: dict[str, str]
) -> None:
    # "what is 1 + 1?" makes four model calls (supervisor, calculator twice, supervisor): about 1.6 s.
    use_settings(monkeypatch, OFFLINE_MODEL_DELAY_MS="400")
    await invoke("warm", {"message": "hello"})

    async def timed(text: str) -> tuple[int, Any, dict[str, str], float]:
        started = time.monotonic()
        status, body, headers = await invoke("race", {"message": text})
        return status, body, headers, time.monotonic() - started

    async def in_use_mid_run() -> int:
        await asyncio.sleep(0.6)
        return await connections_in_use()

    first, second, in_use = await asyncio.gather(timed("what is 1 + 1?"), timed("what is 2 + 2?"), in_use_mid_run())

    statuses = sorted([first[0], second[0]])
    assert statuses == [200, 409]
    winner, loser = (first, second) if first[0] == 200 else (second, first)
    assert loser[1]["code"] == "thread_busy"
    assert loser[2]["content-type"].startswith("application/problem+json")
    assert 1 <= int(loser[2]["retry-after"]) <= 10
    assert loser[3] < 0.5, f"the 409 took {loser[3]:.2f} s"
    assert winner[3] > 1.0
    # While the model works, the run uses no pooled connection.
    assert in_use == 0

    thread = await read_thread("race")
    winner_text = contents(winner[1]["messages"], "user")
    assert contents(thread["messages"], "user") == winner_text
    assert_linear_history(app_environment["DATABASE_URL"], stored_thread_id("race"))


async def test_refused_invoke_retried_after_run_appends_once(
    monkeypatch: pytest.MonkeyPatch, app_environment: dict[str, str]
) -> None:
    use_settings(monkeypatch, OFFLINE_MODEL_DELAY_MS="300")
    running = asyncio.create_task(invoke("retry", {"message": "what is 3 + 4?"}))
    await asyncio.sleep(0.3)

    status, problem, _ = await invoke("retry", {"message": "what is 5 + 6?"})
    assert status == 409
    assert problem["code"] == "thread_busy"
    assert (await running)[0] == 200
    status, _, _ = await invoke("retry", {"message": "what is 5 + 6?"})
    assert status == 200

    thread = await read_thread("retry")
    assert contents(thread["messages"], "user") == ["what is 3 + 4?", "what is 5 + 6?"]
    answers = contents(thread["messages"], "assistant")
    assert answers.count("3 + 4 = 7") == 1
    assert answers.count("5 + 6 = 11") == 1
    assert_linear_history(app_environment["DATABASE_URL"], stored_thread_id("retry"))


async def test_run_over_run_timeout_is_504_and_saves_nothing(
    monkeypatch: pytest.MonkeyPatch, app_environment: dict[str, str]
) -> None:
    # "hello" makes one model call (0.6 s); "what is 2 + 2?" makes four (2.4 s), over the 1 s limit.
    use_settings(monkeypatch, OFFLINE_MODEL_DELAY_MS="600", RUN_TIMEOUT_SECONDS="1")
    status, _, _ = await invoke("slow", {"message": "hello"})
    assert status == 200
    before = checkpoint_parents(app_environment["DATABASE_URL"], stored_thread_id("slow"))

    started = time.monotonic()
    status, problem, headers = await invoke("slow", {"message": "what is 2 + 2?"})
    elapsed = time.monotonic() - started

    assert status == 504
    assert headers["content-type"] == "application/problem+json"
    assert problem["code"] == "upstream_timeout"
    assert problem["detail"] == "the turn took longer than 1 s and was stopped; nothing of it was saved"
    assert elapsed < 2.0
    assert checkpoint_parents(app_environment["DATABASE_URL"], stored_thread_id("slow")) == before

    # The lease was released: the next turn runs at once and continues from the first turn.
    status, _, _ = await invoke("slow", {"message": "hello again"})
    assert status == 200
    thread = await read_thread("slow")
    assert contents(thread["messages"], "user") == ["hello", "hello again"]


async def test_lease_is_renewed_while_run_outlives_it(database_url: str) -> None:
    # A lease of 1 s under a run of about 2.4 s: without renewals the thread would be free mid-run.
    settings = dataclasses.replace(get_settings(), run_lease_seconds=1, offline_model_delay_ms=600)
    running = asyncio.create_task(conversations.run_turn(settings, OWNER, "renewed", message="what is 1 + 1?"))
    await asyncio.sleep(1.8)

    with pytest.raises(ThreadBusy):
        await conversations.run_turn(settings, OWNER, "renewed", message="what is 2 + 2?")
    result = await running

    assert result.status == "completed"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT run_id, lease_until FROM threads WHERE thread_id = %s",
            (conversations.storage_thread_id(OWNER, "renewed"),),
        ).fetchone()
    assert row == (None, None)


async def test_run_whose_lease_was_taken_stops_unsaved(database_url: str) -> None:
    settings = dataclasses.replace(get_settings(), run_lease_seconds=1, offline_model_delay_ms=500)
    await conversations.run_turn(settings, OWNER, "taken", message="hello")
    before = checkpoint_parents(database_url, conversations.storage_thread_id(OWNER, "taken"))

    running = asyncio.create_task(conversations.run_turn(settings, OWNER, "taken", message="what is 1 + 1?"))
    await asyncio.sleep(0.2)
    # Another worker takes the thread, as it could if this worker's renewals had stopped.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE threads SET run_id = gen_random_uuid(), lease_until = now() + interval '1 minute' "
            "WHERE thread_id = %s",
            (conversations.storage_thread_id(OWNER, "taken"),),
        )

    with pytest.raises(ThreadBusy, match="was taken by another run"):
        await running
    assert checkpoint_parents(database_url, conversations.storage_thread_id(OWNER, "taken")) == before
