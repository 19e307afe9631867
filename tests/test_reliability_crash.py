"""A worker killed mid-run (SIGKILL of the local host process): the thread frees and continues cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.hosting import LocalHostProcess
from tests.apphost import bearer
from tests.conftest import base_environment

pytestmark = pytest.mark.slow

LEASE_SECONDS = 5
# Each offline model call takes 1.5 s, so "what is 1 + 1?" (four calls) runs for about 6 s.
SLOW_MODEL = {"OFFLINE_MODEL_DELAY_MS": "1500", "RUN_LEASE_SECONDS": str(LEASE_SECONDS), "RUN_TIMEOUT_SECONDS": "30"}


@pytest.fixture
def host_factory(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[LocalHostProcess] = []

    def start() -> LocalHostProcess:
        environment = {**base_environment(database_url), **SLOW_MODEL}
        host = LocalHostProcess(environment, tmp_path / f"host-{len(started)}.log")
        started.append(host)
        return host.start()

    yield start
    for host in started:
        host.stop()


def unanswered_call_ids(messages: list[dict[str, Any]]) -> set[str]:
    calls = {call["id"] for m in messages for call in m.get("toolCalls", [])}
    # A tool message carries no call id in the API, so match results to calls by position instead.
    answered = {
        call["id"]
        for index, m in enumerate(messages)
        for call in m.get("toolCalls", [])
        if index + 1 < len(messages) and messages[index + 1]["role"] == "tool"
    }
    return calls - answered


def test_killed_worker_thread_continues_without_trace(host_factory: Any) -> None:
    headers = bearer()
    first = host_factory()
    url = f"{first.base_url}/api/threads/crash/invoke"
    assert httpx.post(url, json={"message": "hello"}, headers=headers, timeout=30).status_code == 200

    outcomes: list[str] = []

    def send_doomed_turn() -> None:
        try:
            reply = httpx.post(url, json={"message": "what is 1 + 1?"}, headers=headers, timeout=30)
            outcomes.append(f"answered {reply.status_code}")
        except httpx.TransportError as err:
            outcomes.append(type(err).__name__)

    doomed = threading.Thread(target=send_doomed_turn)
    doomed.start()
    # Mid-run: the supervisor has handed over and the calculator's model call is under way.
    time.sleep(2.5)
    first.kill()
    killed_at = time.monotonic()
    doomed.join(timeout=10)
    assert outcomes and not outcomes[0].startswith("answered"), outcomes

    second = host_factory()
    url = f"{second.base_url}/api/threads/crash/invoke"
    reply = httpx.post(url, json={"message": "what is 2 + 2?"}, headers=headers, timeout=30)
    refusals = 0
    while reply.status_code == 409:
        refusals += 1
        assert reply.json()["code"] == "thread_busy"
        assert 1 <= int(reply.headers["Retry-After"]) <= 10
        assert time.monotonic() - killed_at < LEASE_SECONDS + 5, "the dead worker's lease never expired"
        time.sleep(0.5)
        reply = httpx.post(url, json={"message": "what is 2 + 2?"}, headers=headers, timeout=30)

    assert reply.status_code == 200, reply.text
    assert refusals >= 1, "the thread was free before the killed run's lease expired"
    thread = httpx.get(f"{second.base_url}/api/threads/crash", headers=headers, timeout=30).json()
    messages = thread["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hello", "what is 2 + 2?"]
    assert [m["content"] for m in messages if m["name"] == "calculator" and not m.get("toolCalls")] == ["2 + 2 = 4"]
    assert unanswered_call_ids(messages) == set()
    assert thread["status"] == "idle"
