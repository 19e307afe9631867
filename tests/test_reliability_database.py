"""Database outages: dead pooled connections, a server restart and a server down mid-series.

The restart and outage tests run their own throwaway PostgreSQL server (scripts/local-postgres on a
free port and data directory), never the shared one that every other test uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.hosting import LocalHostProcess, free_port
from shared import conversations
from shared.errors import DatabaseUnavailable
from shared.settings import get_settings, reset_settings_cache
from tests.apphost import bearer, call_function, response_json
from tests.conftest import base_environment, database_url_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
APPLICATION_NAME = "langgraph-functions"


@dataclass
class OwnServer:
    """A PostgreSQL server of this module alone, started and stopped with scripts/local-postgres."""

    port: int
    data_dir: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *arguments: str) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        environment.update(PGPORT=str(self.port), LOCAL_PG_DIR=self.data_dir)
        subprocess.run(
            [str(ROOT / "scripts" / "local-postgres"), *arguments],
            check=True,
            env=environment,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._run()

    def stop(self) -> None:
        self._run("stop")

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return database_url_for(self.url, name)


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    # Directly under /tmp: when the tests run as root the server runs as 'postgres', which cannot
    # enter pytest's private temporary directories.
    server = OwnServer(free_port(), f"/tmp/langgraph-functions-reliability-{uuid.uuid4().hex[:8]}")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    Path(f"{server.data_dir}.log").unlink(missing_ok=True)


def set_environment(monkeypatch: pytest.MonkeyPatch, database_url: str, **extra: str) -> None:
    for name, value in {**base_environment(database_url), **extra}.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()


async def invoke(thread_id: str, message: str) -> tuple[int, Any]:
    response = await call_function(
        "invoke_thread",
        method="POST",
        route_params={"threadId": thread_id},
        body={"message": message},
        headers=bearer(),
    )
    return response.status_code, response_json(response)


async def user_messages(thread_id: str) -> list[str]:
    response = await call_function("get_thread", route_params={"threadId": thread_id}, headers=bearer())
    assert response.status_code == 200, response.get_body()
    return [m["content"] for m in response_json(response)["messages"] if m["role"] == "user"]


def terminate_app_backends(database_url: str) -> int:
    """Terminate every server backend of the app's pool in ``database_url``'s database."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return len(rows)


def invocation_total(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(invocation_count), 0) FROM agent_usage_analytics").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def app_on(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the app's settings for a database URL; the pool is closed when the test ends."""

    def configure(database_url: str, **extra: str) -> None:
        set_environment(monkeypatch, database_url, **extra)

    yield configure
    from shared.database import close_pool

    await close_pool()
    reset_settings_cache()


async def test_terminated_pool_connections_are_replaced(app_on: Any, database_url: str) -> None:
    app_on(database_url)
    assert (await invoke("c01", "what is 1 + 1?"))[0] == 200

    assert terminate_app_backends(database_url) >= 1
    status, body = await invoke("c01", "what is 2 + 2?")

    assert status == 200, body
    assert await user_messages("c01") == ["what is 1 + 1?", "what is 2 + 2?"]


async def test_terminated_connections_count_turn_once(app_on: Any, database_url: str) -> None:
    pytest.importorskip("shared.analytics.writer", reason="usage analytics are not written yet")
    app_on(database_url)
    assert (await invoke("c01-usage", "what is 1 + 1?"))[0] == 200
    per_turn = invocation_total(database_url)
    assert per_turn >= 2

    terminate_app_backends(database_url)
    assert (await invoke("c01-usage", "what is 1 + 1?"))[0] == 200

    assert invocation_total(database_url) == 2 * per_turn


async def test_server_restart_while_idle_is_invisible(app_on: Any, own_server: OwnServer) -> None:
    database_url = own_server.create_database()
    app_on(database_url)
    assert (await invoke("restart", "what is 1 + 1?"))[0] == 200

    own_server.stop()
    own_server.start()
    status, body = await invoke("restart", "what is 2 + 2?")

    assert status == 200, body
    assert await user_messages("restart") == ["what is 1 + 1?", "what is 2 + 2?"]


async def test_run_stops_when_lease_cannot_be_renewed(app_on: Any, own_server: OwnServer) -> None:
    database_url = own_server.create_database()
    app_on(database_url)
    owner = "tenant/user/reliability"
    # Four model calls of 1 s each under a lease of 3 s renewed every second.
    settings = dataclasses.replace(get_settings(), run_lease_seconds=3, offline_model_delay_ms=1000)
    await conversations.run_turn(settings, owner, "unrenewed", message="hello")

    started = time.monotonic()
    running = asyncio.create_task(conversations.run_turn(settings, owner, "unrenewed", message="what is 1 + 1?"))
    await asyncio.to_thread(own_server.stop)
    try:
        with pytest.raises(DatabaseUnavailable, match="could not be renewed"):
            await running
        stopped_after = time.monotonic() - started
    finally:
        await asyncio.to_thread(own_server.start)

    # The run stops about 2 s in, once a third of its lease is left. Then the reply waits at most 1 s
    # for the lease release and ANALYTICS_WRITE_TIMEOUT_MS (2 s) for the usage write, both lost.
    assert stopped_after < 6.5
    thread = await conversations.get_thread(settings, owner, "unrenewed")
    assert [m["content"] for m in thread.messages if m["role"] == "user"] == ["hello"]


@pytest.fixture
def outage_host(own_server: OwnServer, tmp_path: Path) -> Iterator[LocalHostProcess]:
    environment = {**base_environment(own_server.create_database()), "DATABASE_POOL_TIMEOUT_SECONDS": "1"}
    host = LocalHostProcess(environment, tmp_path / "host.log").start()
    yield host
    host.stop()


def assert_unavailable_problem(reply: httpx.Response) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert int(reply.headers["Retry-After"]) >= 1
    problem = reply.json()
    assert problem["status"] == 503
    assert problem["code"] == "database_unavailable"
    assert "Traceback" not in reply.text
    assert "psycopg" not in reply.text


def test_server_down_mid_series_gives_503_then_recovers(own_server: OwnServer, outage_host: LocalHostProcess) -> None:
    headers = bearer()
    client = httpx.Client(base_url=outage_host.base_url, headers=headers, timeout=30)
    acknowledged: dict[str, list[str]] = {}

    def turn(thread_id: str, message: str) -> httpx.Response:
        reply = client.post(f"/api/threads/{thread_id}/invoke", json={"message": message})
        if reply.status_code == 200:
            acknowledged.setdefault(thread_id, []).append(message)
        return reply

    for number in range(3):
        assert turn(f"series-{number}", f"what is {number} + 1?").status_code == 200

    own_server.stop()
    down = [
        turn("series-0", "what is 5 + 5?"),
        turn("series-new", "hello"),
        client.get("/api/threads/series-1"),
        client.get("/api/threads"),
        client.delete("/api/threads/series-2"),
    ]
    for reply in down:
        assert_unavailable_problem(reply)

    own_server.start()
    recovered_at = time.monotonic()
    reply = turn("series-0", "what is 6 + 6?")
    while reply.status_code == 503 and time.monotonic() - recovered_at < 15:
        time.sleep(0.5)
        reply = turn("series-0", "what is 6 + 6?")
    assert reply.status_code == 200, reply.text
    assert time.monotonic() - recovered_at < 15

    for thread_id, messages in acknowledged.items():
        thread = client.get(f"/api/threads/{thread_id}").json()
        assert [m["content"] for m in thread["messages"] if m["role"] == "user"] == messages
    assert client.get("/api/threads/series-new").status_code == 404
    client.close()
    assert "failed unexpectedly" not in outage_host.log()
