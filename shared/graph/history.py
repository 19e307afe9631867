"""Repair a message history so that every tool call has exactly one result right after it.

Chat APIs reject a history in which an assistant message with ``tool_calls`` is not followed by one
tool message per call id (OpenAI answers HTTP 400, and LangGraph's prebuilt agent raises
``ValueError`` before calling the model). Such a history is left behind when a run stops between a
model's tool call and the tool's result being saved. ``repair_tool_results`` puts each result right
after the message that made the call, adds an error result for each call that has none, and drops
tool results that answer no earlier call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage

logger = logging.getLogger(__name__)

INTERRUPTED_CALL_RESULT: Final = (
    "error: this tool call was interrupted before it returned a result, so it may not have run. "
    "Call the tool again if the result is still needed."
)


def interrupted_call_result(call: ToolCall) -> ToolMessage:
    """Build the error result that stands in for a tool call that never returned."""
    return ToolMessage(
        content=INTERRUPTED_CALL_RESULT,
        tool_call_id=str(call.get("id") or ""),
        name=call.get("name"),
        status="error",
    )


def repair_tool_results(messages: Sequence[BaseMessage]) -> tuple[list[BaseMessage], bool]:
    """Return ``messages`` with every tool call answered right after its message, and whether anything changed.

    Results that already exist keep their id and content and move to just after the assistant
    message that made the call, in the order of its calls; a call without a result gets
    ``interrupted_call_result``; a tool result whose call id no assistant message made is dropped.
    Calling it on its own output changes nothing.
    """
    results: dict[str, ToolMessage] = {}
    for message in messages:
        if isinstance(message, ToolMessage):
            results.setdefault(message.tool_call_id, message)

    repaired: list[BaseMessage] = []
    placed: set[str] = set()
    for message in messages:
        if isinstance(message, ToolMessage):
            # Placed after its call already, or a result that answers no call: both are left out here.
            continue
        repaired.append(message)
        if not isinstance(message, AIMessage):
            continue
        for call in message.tool_calls:
            call_id = str(call.get("id") or "")
            if call_id in placed:
                continue
            placed.add(call_id)
            repaired.append(results.get(call_id) or interrupted_call_result(call))

    changed = len(repaired) != len(messages) or any(a is not b for a, b in zip(repaired, messages, strict=True))
    return repaired, changed


def unanswered_tool_calls(messages: Sequence[BaseMessage]) -> list[ToolCall]:
    """List the tool calls in ``messages`` that have no tool result anywhere after them."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    return [
        call
        for message in messages
        if isinstance(message, AIMessage)
        for call in message.tool_calls
        if str(call.get("id") or "") not in answered
    ]


def guard_model_input(state: Mapping[str, Any]) -> dict[str, Any]:
    """Give the model a repaired copy of the state's messages; the state itself is not changed.

    Used as the agents' ``pre_model_hook``, so no history with an unanswered tool call reaches a
    model provider even if it was saved before the conversation service repaired it.
    """
    messages = list(state.get("messages") or [])
    repaired, changed = repair_tool_results(messages)
    if changed:
        logger.warning(
            "model input of %d messages had %d unanswered tool call(s); sent error results in their place",
            len(messages),
            len(unanswered_tool_calls(messages)),
        )
    return {"llm_input_messages": repaired}
