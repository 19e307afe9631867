"""Histories with a tool call and no result: repaired before the next turn and never sent to a model.

The model is the strict OpenAI-compatible server in tests/fake_openai.py, which rejects such a
history with HTTP 400 as the real service does; the database is a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_openai.chat_models.base import _convert_message_to_dict

from shared.graph.history import INTERRUPTED_CALL_RESULT, repair_tool_results, unanswered_tool_calls
from shared.settings import get_settings, reset_settings_cache
from tests.apphost import bearer, call_function, response_json, stored_thread_id
from tests.fake_openai import FakeOpenAI, tool_call_history_error


def call(call_id: str, name: str = "calculate") -> dict[str, Any]:
    return {"name": name, "args": {"expression": "1 + 1"}, "id": call_id, "type": "tool_call"}


def ai(*call_ids: str, name: str = "calculator") -> AIMessage:
    return AIMessage(content="", name=name, tool_calls=[call(i) for i in call_ids])  # type: ignore[misc]


def result(call_id: str, content: str = "1 + 1 = 2") -> ToolMessage:
    return ToolMessage(content=content, tool_call_id=call_id, name="calculate")


def as_openai(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [_convert_message_to_dict(m) for m in messages]


def test_history_without_tool_calls_is_unchanged() -> None:
    history: list[BaseMessage] = [HumanMessage(content="hi"), AIMessage(content="hello")]

    repaired, changed = repair_tool_results(history)

    assert changed is False
    assert repaired == history


def test_unanswered_call_at_end_gets_error_result() -> None:
    history: list[BaseMessage] = [HumanMessage(content="what is 1 + 1?"), ai("a")]

    repaired, changed = repair_tool_results(history)

    assert changed is True
    assert repaired[:2] == history
    added = repaired[2]
    assert isinstance(added, ToolMessage)
    assert added.tool_call_id == "a"
    assert added.status == "error"
    assert added.content == INTERRUPTED_CALL_RESULT
    assert tool_call_history_error(as_openai(repaired)) is None


def test_error_result_goes_right_after_its_call() -> None:
    history: list[BaseMessage] = [
        HumanMessage(content="first"),
        ai("a", "b"),
        result("a"),
        HumanMessage(content="second"),
        AIMessage(content="answer"),
    ]

    repaired, changed = repair_tool_results(history)

    assert changed is True
    assert [type(m).__name__ for m in repaired] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "HumanMessage",
        "AIMessage",
    ]
    assert [m.tool_call_id for m in repaired if isinstance(m, ToolMessage)] == ["a", "b"]
    assert repaired[2] is history[2]
    assert tool_call_history_error(as_openai(history)) is not None
    assert tool_call_history_error(as_openai(repaired)) is None


def test_stray_result_is_dropped_and_late_result_moved() -> None:
    history: list[BaseMessage] = [
        result("nobody-asked"),
        HumanMessage(content="q"),
        ai("a"),
        HumanMessage(content="interjection"),
        result("a"),
    ]

    repaired, changed = repair_tool_results(history)

    assert changed is True
    assert [m.tool_call_id for m in repaired if isinstance(m, ToolMessage)] == ["a"]
    assert repaired.index(history[4]) == repaired.index(history[2]) + 1
    assert tool_call_history_error(as_openai(repaired)) is None


def test_unanswered_tool_calls_lists_only_missing_ones() -> None:
    history: list[BaseMessage] = [ai("a", "b"), result("a")]

    assert [c["id"] for c in unanswered_tool_calls(history)] == ["b"]


# A history is drawn as a list of steps: a user message, an assistant message with some calls, or
# a tool result for a call id that may or may not have been made.
_STEP = st.one_of(
    st.just(("user",)),
    st.tuples(st.just("assistant"), st.lists(st.sampled_from("abcdef"), max_size=3, unique=True)),
    st.tuples(st.just("tool"), st.sampled_from("abcdefg")),
)


def _build(steps: list[tuple[Any, ...]]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    made: set[str] = set()
    for number, step in enumerate(steps):
        if step[0] == "user":
            messages.append(HumanMessage(content=f"user {number}"))
        elif step[0] == "assistant":
            # Call ids are unique in a real history; suffix repeats so each call is made once.
            ids = [i if i not in made else f"{i}{number}" for i in step[1]]
            made.update(ids)
            messages.append(ai(*ids) if ids else AIMessage(content=f"answer {number}"))
        else:
            messages.append(result(step[1]))
    return messages


@settings(max_examples=200, deadline=None)
@given(st.lists(_STEP, max_size=12))
def test_repaired_history_always_passes_strict_check(steps: list[tuple[Any, ...]]) -> None:
    history = _build(steps)

    repaired, _ = repair_tool_results(history)
    again, changed_again = repair_tool_results(repaired)

    assert tool_call_history_error(as_openai(repaired)) is None
    assert changed_again is False
    assert again == repaired
    assert [m for m in repaired if not isinstance(m, ToolMessage)] == [
        m for m in history if not isinstance(m, ToolMessage)
    ]


@pytest.fixture
async def fake_openai(app_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    """Point the app's settings at the strict fake server as its OpenAI-compatible model."""
    server = FakeOpenAI()
    base_url = await server.start()
    monkeypatch.setenv("MODEL_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{base_url}/v1")
    monkeypatch.setenv("OPENAI_MODEL", "fake-model")
    reset_settings_cache()
    yield server
    await server.stop()


async def invoke(thread_id: str, body: Any) -> tuple[int, Any]:
    response = await call_function(
        "invoke_thread", method="POST", route_params={"threadId": thread_id}, body=body, headers=bearer()
    )
    return response.status_code, response_json(response)


async def read_messages(thread_id: str) -> list[dict[str, Any]]:
    response = await call_function("get_thread", route_params={"threadId": thread_id}, headers=bearer())
    assert response.status_code == 200, response.get_body()
    messages: list[dict[str, Any]] = response_json(response)["messages"]
    return messages


def contents(messages: list[dict[str, Any]], role: str) -> list[str]:
    return [m["content"] for m in messages if m["role"] == role]


ORPHAN_CALL = {"name": "calculate", "args": {"expression": "6 * 7"}, "id": "call_orphan_1", "type": "tool_call"}


async def save_unanswered_tool_call(thread_id: str) -> None:
    """Save a checkpoint that ends with the calculator's tool call and no result, as a stopped run leaves it.

    Turns are atomic now, so only a version from before the threads row recorded its message count
    could leave such a history; the row is set back to that (an unknown count) too.
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from shared.database import get_pool
    from shared.graph.supervisor import compile_supervisor

    settings = get_settings()
    graph = compile_supervisor(settings, AsyncPostgresSaver(await get_pool(settings)))
    orphan = AIMessage(content="", name="calculator", tool_calls=[ORPHAN_CALL])
    await graph.aupdate_state(
        {"configurable": {"thread_id": stored_thread_id(thread_id)}},
        {"messages": [HumanMessage(content="what is 6 * 7?"), orphan]},
        as_node="supervisor",
    )
    pool = await get_pool(settings)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE threads SET message_count = NULL WHERE thread_id = %s", (stored_thread_id(thread_id),)
        )


async def test_strict_fake_rejects_unanswered_tool_call(fake_openai: FakeOpenAI) -> None:
    history = [
        {"role": "user", "content": "what is 6 * 7?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": "{}"}}],
        },
        {"role": "user", "content": "hello"},
    ]
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"http://127.0.0.1:{fake_openai.port}/v1/chat/completions",
            json={"model": "fake-model", "messages": history},
        )

    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'"
    )
    assert "call_1" in error["message"]


async def test_unanswered_tool_call_is_repaired_before_next_turn(fake_openai: FakeOpenAI) -> None:
    status, _ = await invoke("orphan-call", {"message": "what is 2 + 3?"})
    assert status == 200
    await save_unanswered_tool_call("orphan-call")

    status, body = await invoke("orphan-call", {"message": "what is 1 + 1?"})

    assert status == 200, body
    assert body["status"] == "completed"
    assert contents(body["messages"], "user") == ["what is 1 + 1?"]
    assert body["messages"][-1]["role"] == "assistant"
    assert fake_openai.rejections == []

    messages = await read_messages("orphan-call")
    orphan_at = next(
        i for i, m in enumerate(messages) if any(c["id"] == "call_orphan_1" for c in m.get("toolCalls", []))
    )
    result = messages[orphan_at + 1]
    assert result["role"] == "tool"
    assert result["name"] == "calculate"
    assert result["content"].startswith("error: this tool call was interrupted")
    assert contents(messages, "user") == ["what is 2 + 3?", "what is 6 * 7?", "what is 1 + 1?"]


async def test_model_input_guard_repairs_history_it_is_given(fake_openai: FakeOpenAI) -> None:
    """Even a run started on an unrepaired history sends the provider a valid one."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from shared.database import get_pool
    from shared.graph.supervisor import compile_supervisor

    settings = get_settings()
    graph = compile_supervisor(settings, AsyncPostgresSaver(await get_pool(settings)))
    orphan = AIMessage(content="", name="calculator", tool_calls=[ORPHAN_CALL])
    history = [HumanMessage(content="what is 6 * 7?"), orphan, HumanMessage(content="what is 1 + 1?")]

    output = await graph.ainvoke({"messages": history}, {"configurable": {"thread_id": "guarded"}})

    assert fake_openai.rejections == []
    assert fake_openai.count_of("supervisor") >= 1
    assert output["messages"][-1].content
