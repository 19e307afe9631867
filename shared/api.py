"""Parse and check the inputs of each endpoint, before any database or model work."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import BadRequest
from shared.http import json_type_name
from shared.settings import Settings

TURN_FIELDS = ("message", "resume")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class TurnRequest:
    """A new user message, or the answer to a pending interrupt (``is_resume``)."""

    message: str | None
    resume: Any
    is_resume: bool


def parse_turn_request(body: Mapping[str, Any], settings: Settings) -> TurnRequest:
    """Check an invoke body: exactly one of ``message`` and ``resume``, and nothing else.

    Unknown keys are refused rather than ignored, so no client value (a LangGraph ``config``,
    a ``checkpoint_id``, a ``recursion_limit``) can ever reach the graph's configuration.
    """
    unknown = sorted(k for k in body if k not in TURN_FIELDS)
    if unknown:
        names = ", ".join(json.dumps(k)[:60] for k in unknown[:5])
        raise BadRequest(f"unknown field(s) {names}; the body takes only 'message' or 'resume'")

    has_message, has_resume = "message" in body, "resume" in body
    if has_message == has_resume:
        raise BadRequest("the body must have exactly one of 'message' (a new turn) or 'resume' (answer an interrupt)")

    if has_resume:
        return TurnRequest(message=None, resume=body["resume"], is_resume=True)

    message = body["message"]
    if not isinstance(message, str):
        raise BadRequest(f"message must be a string, got {json_type_name(message)}")
    if not message.strip():
        raise BadRequest("message must not be empty")
    if len(message) > settings.max_message_chars:
        raise BadRequest(f"message must be at most {settings.max_message_chars} characters, got {len(message)}")
    return TurnRequest(message=message, resume=None, is_resume=False)


def parse_int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """Read an integer query parameter within ``low``..``high``; ``BadRequest`` names it when invalid."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or not low <= int(text) <= high:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {json.dumps(shown)}")
    return int(text)


def parse_page_params(params: Mapping[str, str]) -> tuple[int, str | None]:
    """Read ``limit`` (1..100, default 20) and ``cursor`` for listing threads."""
    limit = parse_int_param(params, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    cursor = params.get("cursor") or None
    if cursor is not None and len(cursor) > 512:
        raise BadRequest("cursor must be a nextCursor value from a previous page")
    return limit, cursor
