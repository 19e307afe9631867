"""HTTP helpers for the handlers: request parsing, JSON replies and problem documents (RFC 9457)."""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from shared.errors import AppError, BadRequest, DatabaseUnavailable, PayloadTooLarge

logger = logging.getLogger(__name__)

PROBLEM_MIME = "application/problem+json"
# Not only dots: "." and ".." are path segments that clients and proxies resolve away in a URL.
THREAD_ID_PATTERN = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,128}$")

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        headers=headers,
        mimetype="application/json",
        charset="utf-8",
    )


def problem_response(
    status: int, title: str, detail: str, *, code: str, headers: dict[str, str] | None = None, **extra: Any
) -> func.HttpResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code, **extra}
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers=headers,
        mimetype=PROBLEM_MIME,
        charset="utf-8",
    )


def error_response(err: AppError) -> func.HttpResponse:
    return problem_response(err.status, err.title, err.detail, code=err.code, headers=err.headers)


def handle_errors(handler: Handler) -> Handler:
    """Wrap a handler so every error becomes a problem document and nothing leaks a traceback.

    Application errors keep their status; anything unexpected is logged with its traceback and a
    correlation id, and the client gets a 500 problem carrying only that id.
    """

    async def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return await handler(req)
        except AppError as err:
            if err.status >= 500:
                logger.warning("%s %s failed with %d: %s", req.method, _path(req), err.status, err.detail)
            return error_response(err)
        except Exception as err:
            if _is_database_outage(err):
                logger.warning("%s %s: database unavailable: %s", req.method, _path(req), type(err).__name__)
                return error_response(
                    DatabaseUnavailable(
                        "The database is unavailable; retry in a few seconds.", headers={"Retry-After": "5"}
                    )
                )
            correlation_id = uuid.uuid4().hex
            logger.exception("%s %s failed unexpectedly (correlation id %s)", req.method, _path(req), correlation_id)
            return problem_response(
                500,
                "Internal server error",
                f"The request failed unexpectedly; quote correlation id {correlation_id} when reporting it.",
                code="internal_error",
                correlationId=correlation_id,
            )

    # The Functions worker reads the binding's parameter name and type from the signature.
    return functools.wraps(handler)(wrapper)


def _is_database_outage(err: BaseException) -> bool:
    """Tell whether ``err`` means the database cannot be reached right now (down, restarting, pool exhausted)."""
    # psycopg is imported here, not at module level, so importing the app stays cheap; an error
    # from psycopg means it is already loaded.
    if not type(err).__module__.startswith("psycopg"):
        return False
    import psycopg
    from psycopg_pool import PoolTimeout

    return isinstance(err, (psycopg.OperationalError, PoolTimeout))


def _path(req: func.HttpRequest) -> str:
    url: str = req.url
    return url.split("?", 1)[0]


def require_thread_id(req: func.HttpRequest) -> str:
    """Return the ``threadId`` route parameter, or raise ``BadRequest`` when it breaks the pattern."""
    thread_id: str = req.route_params.get("threadId", "")
    # fullmatch, because "$" also matches before a trailing newline ("abc\n").
    if not THREAD_ID_PATTERN.fullmatch(thread_id):
        shown = thread_id if len(thread_id) <= 40 else thread_id[:40] + "..."
        raise BadRequest(
            f"threadId must be 1 to 128 letters, digits, '.', '_' or '-', not only dots, got {json.dumps(shown)}"
        )
    return thread_id


def read_json_object(req: func.HttpRequest, max_bytes: int) -> dict[str, Any]:
    """Parse the request body as a JSON object no larger than ``max_bytes``.

    Raises ``PayloadTooLarge`` for a body over the limit and ``BadRequest`` for a body that is
    empty, not UTF-8, not JSON, or not a JSON object.
    """
    declared = req.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body must be at most {max_bytes} bytes, got {int(declared)}")
    body = req.get_body() or b""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body must be at most {max_bytes} bytes, got {len(body)}")
    if not body.strip():
        raise BadRequest("request body must be a JSON object, got an empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body must be UTF-8 encoded JSON") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        position = f" at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise BadRequest(f"request body is not valid JSON{position}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {json_type_name(data)}")
    try:
        # JSON allows "\ud800" escapes that decode to lone surrogates, which no UTF-8 text holds:
        # such a string could be stored but never sent back.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("request body has a \\u escape of a lone surrogate, which is not valid Unicode text") from None
    return data


def json_type_name(value: Any) -> str:
    """Name the JSON type of ``value`` as a message would ("a string", "an array", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
