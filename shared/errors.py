"""Application errors: each carries the HTTP status and stable code that the problem document shows."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error that reaches a client as a problem document.

    ``detail`` is shown to the client as is, so it must never carry secrets or internals.
    """

    status = 500
    code = "internal_error"
    title = "Internal server error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class NotFound(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class ThreadNotFound(NotFound):
    code = "thread_not_found"
    title = "Thread not found"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(AppError):
    status = 409
    code = "conflict"
    title = "Conflict"


class ThreadBusy(Conflict):
    code = "thread_busy"
    title = "Thread is busy"


class NoPendingInterrupt(Conflict):
    code = "no_pending_interrupt"
    title = "No pending interrupt"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class SettingsError(ServiceUnavailable):
    """A setting is missing or malformed; the message names it and shows a valid value."""

    code = "misconfigured"
    title = "Service misconfigured"

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(detail)
        self.setting = setting


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    title = "Database unavailable"


class UpstreamTimeout(AppError):
    status = 504
    code = "upstream_timeout"
    title = "Upstream timed out"


class UpstreamError(AppError):
    status = 502
    code = "upstream_error"
    title = "Upstream error"
