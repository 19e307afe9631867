"""The ``offline`` model provider: a deterministic stand-in for a language model.

It is not a language model. It routes and calls tools by fixed keyword rules so the whole graph
(handoffs, tool calls, approvals, checkpoints, analytics) runs without a network or a key, in tests,
benchmarks and local runs. Token counts are estimated from text length (about four characters per
token), so analytics have numbers to add up. ``delay_seconds`` makes each call take that long, as a
real model would, to exercise concurrency.

Rules, applied to the latest user message split into requests on ';' and 'then':
- the supervisor hands each request in turn to the agent whose keywords it contains, then answers;
- the calculator evaluates an arithmetic expression or converts '<number> <unit> to <unit>';
- the scheduler books a meeting, counts days between two dates or tells the time in a zone.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import ModelTimeoutError
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

MODEL_NAME = "offline"

_SCHEDULER_WORDS = re.compile(r"\b(book|meeting|schedule|calendar|time|date|dates|days|today|tomorrow)\b", re.I)
_CALCULATOR_WORDS = re.compile(r"\b(calculate|compute|convert|sum|plus|minus|times)\b", re.I)
_ARITHMETIC = re.compile(r"[-+(]*\d[\d.,\s]*(?:[-+*/%^×÷]+[\s(]*[-+]?\d[\d.,\s)]*)+")
_CONVERSION = re.compile(r"(-?\d+(?:\.\d+)?)\s*(°?[a-zA-Z]+)\s+(?:to|in|into)\s+(°?[a-zA-Z]+)")
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_TIME_ZONE = re.compile(r"\b([A-Z][a-zA-Z_]+/[A-Z][a-zA-Z_]+(?:/[A-Z][a-zA-Z_]+)?|UTC)\b")
_SEGMENT_SPLIT = re.compile(r";|\bthen\b", re.I)


def estimate_tokens(text: str) -> int:
    """Estimate tokens as one per four characters, at least one for non-empty text."""
    return math.ceil(len(text) / 4) if text else 0


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def route(request: str) -> str | None:
    """Name the agent whose keywords ``request`` contains, or None when no agent fits."""
    if _SCHEDULER_WORDS.search(request):
        return "scheduler"
    if _CALCULATOR_WORDS.search(request) or _ARITHMETIC.search(request) or _CONVERSION.search(request):
        return "calculator"
    return None


def split_requests(text: str) -> list[str]:
    return [part.strip() for part in _SEGMENT_SPLIT.split(text) if part.strip()]


def _latest_user_turn(messages: Sequence[BaseMessage]) -> tuple[str, list[BaseMessage]]:
    """Return the latest user message's text and the messages that came after it."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return _message_text(messages[index]), list(messages[index + 1 :])
    return "", list(messages)


def _handoffs(messages: Sequence[BaseMessage]) -> list[str]:
    names: list[str] = []
    for message in messages:
        if isinstance(message, AIMessage):
            names.extend(call["name"] for call in message.tool_calls if call["name"].startswith("transfer_to_"))
    return names


def _tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "tool_call"}


class OfflineChatModel(BaseChatModel):
    """Rule-based chat model for one agent; see the module docstring for the rules."""

    agent: str
    delay_seconds: float = 0.0
    # Like a real provider's client, a call that would take longer fails with ModelTimeoutError.
    timeout_seconds: float | None = None

    @property
    def _llm_type(self) -> str:
        return "offline"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Any | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.timeout_seconds is not None and self.delay_seconds > self.timeout_seconds:
            time.sleep(self.timeout_seconds)
            raise ModelTimeoutError(f"the offline model did not respond within {self.timeout_seconds:g} s")
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        return self._respond(messages, kwargs.get("tools") or [])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.timeout_seconds is not None and self.delay_seconds > self.timeout_seconds:
            await asyncio.sleep(self.timeout_seconds)
            raise ModelTimeoutError(f"the offline model did not respond within {self.timeout_seconds:g} s")
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        return self._respond(messages, kwargs.get("tools") or [])

    def _respond(self, messages: list[BaseMessage], tools: list[dict[str, Any]]) -> ChatResult:
        tool_names = {t["function"]["name"] for t in tools}
        if self.agent == "supervisor":
            reply = self._supervise(messages, tool_names)
        else:
            reply = self._work(messages, tool_names)

        prompt_tokens = sum(estimate_tokens(_message_text(m)) for m in messages)
        output_text = _message_text(reply) + "".join(json.dumps(c["args"]) for c in reply.tool_calls)
        output_tokens = max(1, estimate_tokens(output_text))
        reply.usage_metadata = {
            "input_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
        }
        reply.response_metadata = {
            "model_name": MODEL_NAME,
            "finish_reason": "tool_calls" if reply.tool_calls else "stop",
        }
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _supervise(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        request, since = _latest_user_turn(messages)
        requests = split_requests(request)
        done = len(_handoffs(since))
        for pending in requests[done:]:
            agent = route(pending)
            if agent and f"transfer_to_{agent}" in tool_names:
                return AIMessage(content="", tool_calls=[_tool_call(f"transfer_to_{agent}", {})])
            break

        answers = [
            _message_text(m)
            for m in since
            if isinstance(m, AIMessage) and m.name not in (None, "supervisor") and not m.tool_calls
        ]
        if answers:
            return AIMessage(content="Summary: " + " ".join(answers))
        return AIMessage(
            content=(
                "I can do arithmetic and unit conversions (calculator) and tell times, count days "
                "and book meetings (scheduler). Try 'what is (2 + 3) * 4?' or 'book a meeting on 2026-12-24'."
            )
        )

    def _work(self, messages: list[BaseMessage], tool_names: set[str]) -> AIMessage:
        request, since = _latest_user_turn(messages)
        if since and isinstance(since[-1], ToolMessage) and since[-1].name in tool_names:
            return AIMessage(content=_message_text(since[-1]))

        # Act on the request that the supervisor handed over: the n-th handoff takes the n-th request.
        requests = split_requests(request) or [request]
        index = max(0, len(_handoffs(since)) - 1)
        task = requests[min(index, len(requests) - 1)]
        call = self._plan(task, tool_names)
        if call is None:
            return AIMessage(content=f"I could not find anything I can do in {task!r}.")
        return AIMessage(content="", tool_calls=[call])

    def _plan(self, task: str, tool_names: set[str]) -> dict[str, Any] | None:
        if self.agent == "calculator":
            conversion = _CONVERSION.search(task)
            if conversion and "convert_units" in tool_names:
                value, source, target = conversion.groups()
                return _tool_call("convert_units", {"value": float(value), "from_unit": source, "to_unit": target})
            expression = _ARITHMETIC.search(task)
            if expression and "calculate" in tool_names:
                return _tool_call("calculate", {"expression": expression.group(0).strip().replace(",", "")})
            return None

        dates = _ISO_DATE.findall(task)
        if re.search(r"\b(book|meeting|schedule)\b", task, re.I) and "book_meeting" in tool_names:
            title = re.sub(r"\b(please|book|schedule|a|an|meeting|on|for)\b|\d{4}-\d{2}-\d{2}", " ", task, flags=re.I)
            title = " ".join(title.split()).strip(" .,:") or "Meeting"
            return _tool_call("book_meeting", {"title": title[:80], "meeting_date": dates[0] if dates else ""})
        if len(dates) >= 2 and "days_between" in tool_names:
            return _tool_call("days_between", {"start_date": dates[0], "end_date": dates[1]})
        if "current_time" in tool_names and re.search(r"\b(time|today|date)\b", task, re.I):
            zone = _TIME_ZONE.search(task)
            return _tool_call("current_time", {"timezone_name": zone.group(1) if zone else "UTC"})
        return None
