"""A small OpenAI-compatible chat completions server on 127.0.0.1 for tests.

It plays the supervisor and the calculator by fixed rules and returns a ``usage`` block with
distinct token counts for every call, which it records per agent so tests can compare them with
what analytics stored. It serves the OpenAI path (``/v1/chat/completions``) and the Azure OpenAI
path (``/openai/deployments/{deployment}/chat/completions``), plain JSON or server-sent events.

Like the real service, it rejects with HTTP 400 a history in which an assistant message's tool
calls are not answered by tool messages right after it, or a tool message answers no such call.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REPORTED_MODEL = "fake-model-2024-07-18"
_ARITHMETIC = re.compile(r"\d+(?:\s*[-+*/]\s*\d+)+")


@dataclass
class ModelCall:
    agent: str
    input_tokens: int
    output_tokens: int


@dataclass
class FakeOpenAI:
    """The server; ``calls`` lists every answered call, ``failing_agents`` get HTTP 500.

    ``rejections`` lists the error message of every request refused with HTTP 400.
    """

    calls: list[ModelCall] = field(default_factory=list)
    failing_agents: set[str] = field(default_factory=set)
    rejections: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    port: int = 0

    async def start(self) -> str:
        """Start listening on a free port of 127.0.0.1; return the server's base URL."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._complete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def tokens_of(self, agent: str) -> tuple[int, int]:
        """Return the input and output tokens this server reported for ``agent``'s calls."""
        calls = [c for c in self.calls if c.agent == agent]
        return sum(c.input_tokens for c in calls), sum(c.output_tokens for c in calls)

    def count_of(self, agent: str) -> int:
        return sum(1 for c in self.calls if c.agent == agent)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages: list[dict[str, Any]] = body["messages"]
        problem = tool_call_history_error(messages)
        if problem is not None:
            self.rejections.append(problem["message"])
            return web.json_response({"error": problem}, status=400)
        agent = _agent_of(messages)
        if agent in self.failing_agents:
            error = {"error": {"message": f"the fake model fails for {agent}", "type": "server_error"}}
            return web.json_response(error, status=500)

        message = _reply(agent, messages)
        number = next(self._counter)
        usage = {"prompt_tokens": 100 + 7 * len(messages) + number, "completion_tokens": 5 + number}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.calls.append(ModelCall(agent, usage["prompt_tokens"], usage["completion_tokens"]))

        if body.get("stream"):
            return await _stream(request, message, usage, include_usage=_wants_stream_usage(body))
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": REPORTED_MODEL,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )


def tool_call_history_error(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the error OpenAI gives for a history with unanswered or stray tool calls, or None."""
    index = 0
    while index < len(messages):
        message = messages[index]
        if message.get("role") == "tool":
            return _invalid_request(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                "with 'tool_calls'.",
                f"messages.[{index}].role",
            )
        index += 1
        calls = (message.get("tool_calls") or []) if message.get("role") == "assistant" else []
        expected = [call["id"] for call in calls]
        answered: set[str] = set()
        while index < len(messages) and messages[index].get("role") == "tool":
            call_id = messages[index].get("tool_call_id")
            if call_id not in expected:
                break
            answered.add(call_id)
            index += 1
        missing = [call_id for call_id in expected if call_id not in answered]
        if missing:
            return _invalid_request(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(missing)}",
                f"messages.[{index}].role",
            )
    return None


def _invalid_request(message: str, param: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": None}


def _agent_of(messages: list[dict[str, Any]]) -> str:
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    for agent in ("supervisor", "calculator", "scheduler"):
        if agent in system:
            return agent
    return "unknown"


def _reply(agent: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    since = messages[last_user + 1 :]
    question = str(messages[last_user].get("content") or "")
    if agent == "supervisor":
        handed_off = any(
            call["function"]["name"] == "transfer_to_calculator"
            for m in since
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        )
        if handed_off:
            return {"role": "assistant", "content": "The calculator has answered."}
        return _tool_call("transfer_to_calculator", {})

    # The worker answers once its own tool has answered, not the supervisor's handoff tool.
    calculated = {
        call["id"]
        for m in since
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
        if call["function"]["name"] == "calculate"
    }
    if since and since[-1].get("role") == "tool" and since[-1].get("tool_call_id") in calculated:
        return {"role": "assistant", "content": str(since[-1].get("content"))}
    expression = _ARITHMETIC.search(question)
    return _tool_call("calculate", {"expression": expression.group(0) if expression else "0"})


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name}}
    call["function"]["arguments"] = json.dumps(arguments)
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _wants_stream_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return bool(options.get("include_usage"))


async def _stream(
    request: web.Request, message: dict[str, Any], usage: dict[str, int], *, include_usage: bool
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "model": REPORTED_MODEL}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": usage})
    for chunk in chunks:
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
