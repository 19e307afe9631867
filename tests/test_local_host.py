"""End-to-end over a real socket: the app on the local host, in its own process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.hosting import LocalHostProcess
from tests.apphost import bearer
from tests.conftest import base_environment

pytestmark = pytest.mark.slow


@pytest.fixture
def host_factory(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[LocalHostProcess] = []

    def start(**extra: str) -> LocalHostProcess:
        host = LocalHostProcess({**base_environment(database_url), **extra}, tmp_path / f"host-{len(started)}.log")
        started.append(host)
        return host.start()

    yield start
    for host in started:
        host.stop()


def user_messages(thread: dict[str, Any]) -> list[str]:
    return [m["content"] for m in thread["messages"] if m["role"] == "user"]


def test_new_process_continues_thread_from_checkpoint(host_factory: Any) -> None:
    headers = bearer()
    first = host_factory()
    for text in ("what is 2 + 2?", "convert 3 kg to lb"):
        reply = httpx.post(f"{first.base_url}/api/threads/restart/invoke", json={"message": text}, headers=headers)
        assert reply.status_code == 200, reply.text
    first.kill()

    second = host_factory()
    reply = httpx.post(
        f"{second.base_url}/api/threads/restart/invoke", json={"message": "what is 10 / 4?"}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    thread = httpx.get(f"{second.base_url}/api/threads/restart", headers=headers).json()
    assert user_messages(thread) == ["what is 2 + 2?", "convert 3 kg to lb", "what is 10 / 4?"]
    answers = [m["content"] for m in thread["messages"] if m["name"] == "calculator" and not m.get("toolCalls")]
    assert answers == ["2 + 2 = 4", "3 kg = 6.613868 lb", "10 / 4 = 2.5"]


def test_interrupt_pending_in_one_process_resumes_in_another(host_factory: Any) -> None:
    headers = bearer()
    first = host_factory()
    reply = httpx.post(
        f"{first.base_url}/api/threads/approval/invoke", json={"message": "book a retro on 2027-01-15"}, headers=headers
    )
    assert reply.json()["status"] == "interrupted"
    first.kill()

    second = host_factory()
    resumed = httpx.post(f"{second.base_url}/api/threads/approval/invoke", json={"resume": True}, headers=headers)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "completed"
    replies = [m["content"] for m in resumed.json()["messages"] if m["role"] == "assistant"]
    assert any(text.startswith("Booked 'retro' on 2027-01-15") for text in replies)


def test_unknown_route_and_wrong_method_get_problem_documents(host_factory: Any) -> None:
    host = host_factory()

    missing = httpx.get(f"{host.base_url}/api/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")

    wrong = httpx.put(f"{host.base_url}/api/threads/t1/invoke", headers=bearer())
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"


def test_slow_model_calls_run_concurrently_on_one_pool(host_factory: Any, database_url: str) -> None:
    """Ten requests with a model that takes 1 s each finish together, not one after another."""
    host = host_factory(OFFLINE_MODEL_DELAY_MS="1000", DATABASE_POOL_MAX_SIZE="5")
    headers = bearer()
    # Warm the worker (pool, schema, graph) so the timing below is of the requests alone.
    assert httpx.post(f"{host.base_url}/api/threads/warm/invoke", json={"message": "hello"}, headers=headers).is_success

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=host.base_url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    # "hello" makes exactly one model call: the supervisor answers it directly.
                    client.post(f"/api/threads/c05-{n}/invoke", json={"message": "hello"}, headers=headers)
                    for n in range(10)
                )
            )

    started = time.monotonic()
    replies = asyncio.run(send_all())
    elapsed = time.monotonic() - started

    assert [r.status_code for r in replies] == [200] * 10
    # Serialized, the ten calls would take at least 10 s.
    assert elapsed < 5.0, f"10 concurrent 1 s turns took {elapsed:.1f} s"

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'langgraph-functions' "
            "AND datname = current_database()"
        ).fetchone()
    assert row is not None and 1 <= row[0] <= 5
    log = host.log()
    assert "attached to a different loop" not in log
    assert "Event loop is closed" not in log


def test_timer_function_fires_on_demand(host_factory: Any) -> None:
    host = host_factory()

    fired = httpx.post(f"{host.base_url}/admin/functions/nightly_maintenance", json={"input": ""}, timeout=60)
    unknown = httpx.post(f"{host.base_url}/admin/functions/no_such_function", json={"input": ""})

    assert fired.status_code == 202, fired.text
    assert "nightly maintenance:" in host.log()
    assert unknown.status_code == 404
