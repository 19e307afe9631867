"""A failing or slow model provider gives a 502 or 504 problem and saves nothing of the turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from aiohttp import web

from shared.settings import reset_settings_cache
from tests.apphost import bearer, call_function, response_json
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.usefixtures("app_environment")


def use_openai(monkeypatch: pytest.MonkeyPatch, base_url: str, **extra: str) -> None:
    for name, value in {
        "MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "OPENAI_MODEL": "fake-model",
        **extra,
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()


async def invoke(thread_id: str, message: str) -> tuple[int, Any, dict[str, str]]:
    response = await call_function(
        "invoke_thread",
        method="POST",
        route_params={"threadId": thread_id},
        body={"message": message},
        headers=bearer(),
    )
    headers = {name.lower(): value for name, value in response.headers.items()}
    headers["content-type"] = response.mimetype
    return response.status_code, response_json(response), headers


def checkpoint_count(database_url: str, thread_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread_id,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def test_failing_model_is_502_and_saves_nothing(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, app_environment: dict[str, str]
) -> None:
    use_openai(monkeypatch, f"http://127.0.0.1:{fake_openai.port}")
    assert (await invoke("failing", "what is 2 + 3?"))[0] == 200
    before = checkpoint_count(app_environment["DATABASE_URL"], "failing")

    fake_openai.failing_agents.add("calculator")
    status, problem, headers = await invoke("failing", "what is 4 + 4?")

    assert status == 502
    assert headers["content-type"] == "application/problem+json"
    assert problem["code"] == "upstream_error"
    assert problem["detail"] == "the model provider failed with HTTP 500; nothing of this turn was saved"
    assert headers["retry-after"] == "5"
    assert checkpoint_count(app_environment["DATABASE_URL"], "failing") == before

    fake_openai.failing_agents.clear()
    assert (await invoke("failing", "what is 4 + 4?"))[0] == 200


@pytest.fixture
async def silent_model() -> AsyncIterator[str]:
    """Serve an OpenAI-compatible endpoint on 127.0.0.1 that never responds in time."""

    async def never_answers(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", never_answers)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_model_over_model_timeout_is_504(
    silent_model: str, monkeypatch: pytest.MonkeyPatch, app_environment: dict[str, str]
) -> None:
    use_openai(monkeypatch, silent_model, MODEL_TIMEOUT_SECONDS="1", RUN_TIMEOUT_SECONDS="30")

    started = time.monotonic()
    status, problem, headers = await invoke("silent", "hello")
    elapsed = time.monotonic() - started

    assert status == 504
    assert headers["content-type"] == "application/problem+json"
    assert problem["code"] == "upstream_timeout"
    assert problem["detail"] == "the model did not respond within 1 s; nothing of this turn was saved"
    # Two attempts of 1 s each and the client's short back-off, far below RUN_TIMEOUT_SECONDS.
    assert elapsed < 10
    assert checkpoint_count(app_environment["DATABASE_URL"], "silent") == 0
