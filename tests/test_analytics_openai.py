"""Token usage recorded through the OpenAI and Azure OpenAI providers, against a fake server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared import conversations
from shared.database import close_pool
from shared.settings import Settings, load_settings
from tests.conftest import base_environment
from tests.fake_openai import FakeOpenAI


@pytest.fixture
async def fake_openai() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI()
    url = await server.start()
    yield server, url
    await server.stop()


def usage_by_agent(database_url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT agent_id, invocation_count, error_count, total_input_tokens, total_output_tokens,"
            " estimated_cost_usd, unpriced_models FROM agent_usage_analytics"
        ).fetchall()
    return {row["agent_id"]: row for row in rows}


def openai_settings(database_url: str, base_url: str) -> Settings:
    environment = base_environment(database_url) | {
        "MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "OPENAI_MODEL": "fake-model",
        "OPENAI_API_KEY": "test-key",
        "MODEL_PRICES": '{"fake-model": {"input": 0.5, "output": 1.5}}',
    }
    return load_settings(environment)


def azure_settings(database_url: str, base_url: str) -> Settings:
    environment = base_environment(database_url) | {
        "MODEL_PROVIDER": "azure_openai",
        "AZURE_OPENAI_ENDPOINT": base_url,
        "AZURE_OPENAI_DEPLOYMENT": "chat-deployment",
        "AZURE_OPENAI_API_KEY": "test-key",
    }
    return load_settings(environment)


async def test_openai_tokens_match_what_server_returned(database_url: str, fake_openai: tuple[FakeOpenAI, str]) -> None:
    server, url = fake_openai
    settings = openai_settings(database_url, url)
    try:
        result = await conversations.run_turn(settings, "owner", "thread-1", message="what is 2+2")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert result.status == "completed"
    assert server.count_of("supervisor") == 2
    assert server.count_of("calculator") == 2
    assert usage["supervisor"]["invocation_count"] == 2
    assert usage["calculator"]["invocation_count"] == 1
    for agent in ("supervisor", "calculator"):
        input_tokens, output_tokens = server.tokens_of(agent)
        assert (usage[agent]["total_input_tokens"], usage[agent]["total_output_tokens"]) == (
            input_tokens,
            output_tokens,
        )
        # The server reports a dated model name; the price of the configured name applies.
        expected_cost = (Decimal("0.5") * input_tokens + Decimal("1.5") * output_tokens) / 1_000_000
        assert usage[agent]["estimated_cost_usd"] == expected_cost
        assert usage[agent]["unpriced_models"] == []
    assert result.input_tokens == sum(c.input_tokens for c in server.calls)
    assert result.output_tokens == sum(c.output_tokens for c in server.calls)


async def test_azure_openai_tokens_match_and_unpriced_model_is_listed(
    database_url: str, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    server, url = fake_openai
    settings = azure_settings(database_url, url)
    try:
        result = await conversations.run_turn(settings, "owner", "thread-1", message="what is 6*7")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert result.status == "completed"
    for agent in ("supervisor", "calculator"):
        input_tokens, output_tokens = server.tokens_of(agent)
        assert input_tokens > 0
        assert (usage[agent]["total_input_tokens"], usage[agent]["total_output_tokens"]) == (
            input_tokens,
            output_tokens,
        )
        assert usage[agent]["estimated_cost_usd"] == 0
        assert usage[agent]["unpriced_models"] == ["fake-model-2024-07-18"]


async def test_failed_model_call_is_recorded_as_error(database_url: str, fake_openai: tuple[FakeOpenAI, str]) -> None:
    server, url = fake_openai
    server.failing_agents.add("calculator")
    settings = openai_settings(database_url, url)
    try:
        with pytest.raises(Exception) as raised:
            await conversations.run_turn(settings, "owner", "thread-1", message="what is 2+2")
    finally:
        await close_pool()

    usage = usage_by_agent(database_url)
    assert "500" in str(raised.value) or "fails for calculator" in str(raised.value)
    assert usage["calculator"]["invocation_count"] == 1
    assert usage["calculator"]["error_count"] == 1
    assert usage["calculator"]["total_input_tokens"] == 0
    assert usage["supervisor"]["invocation_count"] == 1
    assert usage["supervisor"]["error_count"] == 0
    assert usage["supervisor"]["total_input_tokens"] == server.tokens_of("supervisor")[0]
