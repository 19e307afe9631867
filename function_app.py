"""HTTP and timer functions of the app: each parses, authenticates, calls one function in shared/.

Importing this module reads no setting, opens no connection and builds no graph: a misconfigured
app still lists every function, and each request answers with a problem that says what to fix.
Heavy modules (LangGraph, the checkpointer) are imported by the first request that needs them.
"""

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared.api import parse_int_param, parse_page_params, parse_turn_request
from shared.http import handle_errors, json_response, read_json_object, require_thread_id
from shared.settings import get_settings

if TYPE_CHECKING:
    from shared.auth import Identity
    from shared.settings import Settings

logger = logging.getLogger(__name__)

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


async def _conversation_caller(req: func.HttpRequest) -> tuple["Settings", "Identity"]:
    """Return the settings and the caller's identity, or raise the 401, 403 or 503 to answer with."""
    from shared.auth import authenticate, require_conversation_access

    settings = get_settings()
    identity = await authenticate(req.headers, req.params, settings)
    require_conversation_access(identity, settings)
    return settings, identity


async def _analytics_caller(req: func.HttpRequest) -> "Settings":
    """Return the settings once the caller may read analytics, or raise the 401, 403 or 503 to answer with."""
    from shared.auth import authenticate, require_analytics_access

    settings = get_settings()
    identity = await authenticate(req.headers, req.params, settings)
    require_analytics_access(identity, settings)
    return settings


@app.route(route="health", methods=["GET"])
@handle_errors
async def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness only: no setting, database or model is touched, so nothing leaks."""
    return json_response({"status": "ok"})


@app.route(route="openapi.json", methods=["GET"])
@handle_errors
async def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    from shared.auth import authenticate
    from shared.openapi import load_openapi_document

    settings = get_settings()
    await authenticate(req.headers, req.params, settings)
    return json_response(load_openapi_document())


@app.route(route="threads/{threadId}/invoke", methods=["POST"])
@handle_errors
async def invoke_thread(req: func.HttpRequest) -> func.HttpResponse:
    from shared import conversations

    settings, identity = await _conversation_caller(req)
    thread_id = require_thread_id(req)
    turn = parse_turn_request(read_json_object(req, settings.max_request_bytes), settings)

    result = await conversations.run_turn(
        settings,
        identity.owner_key,
        thread_id,
        message=turn.message,
        resume=turn.resume,
        is_resume=turn.is_resume,
    )
    return json_response(result.to_json())


@app.route(route="threads/{threadId}", methods=["GET"])
@handle_errors
async def get_thread(req: func.HttpRequest) -> func.HttpResponse:
    from shared import conversations

    settings, identity = await _conversation_caller(req)
    thread_id = require_thread_id(req)

    view = await conversations.get_thread(settings, identity.owner_key, thread_id)
    return json_response(view.to_json())


@app.route(route="threads/{threadId}", methods=["DELETE"])
@handle_errors
async def delete_thread(req: func.HttpRequest) -> func.HttpResponse:
    from shared import conversations

    settings, identity = await _conversation_caller(req)
    thread_id = require_thread_id(req)

    await conversations.delete_thread(settings, identity.owner_key, thread_id)
    return func.HttpResponse(status_code=204)


@app.route(route="threads", methods=["GET"])
@handle_errors
async def list_threads(req: func.HttpRequest) -> func.HttpResponse:
    from shared import conversations

    settings, identity = await _conversation_caller(req)
    limit, cursor = parse_page_params(req.params)

    page = await conversations.list_threads(settings, identity.owner_key, limit=limit, cursor=cursor)
    return json_response(page.to_json())


@app.route(route="analytics/agents", methods=["GET"])
@handle_errors
async def agent_usage_summary(req: func.HttpRequest) -> func.HttpResponse:
    from shared.analytics import queries

    settings = await _analytics_caller(req)
    start, end = queries.parse_date_range(req.params)

    summary = await queries.usage_summary(settings, start, end)
    return json_response(summary)


@app.route(route="analytics/agents/{agentId}/daily", methods=["GET"])
@handle_errors
async def agent_usage_daily(req: func.HttpRequest) -> func.HttpResponse:
    from shared.analytics import queries

    settings = await _analytics_caller(req)
    agent_id = queries.require_agent_id(req.route_params.get("agentId", ""))
    days = parse_int_param(req.params, "days", 30, 1, 366)

    daily = await queries.daily_usage(settings, agent_id, days)
    return json_response(daily)


@app.timer_trigger(schedule="%ROLLUP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def nightly_maintenance(timer: func.TimerRequest) -> None:
    """Roll up old analytics and prune old conversations; a failure propagates so the run is marked failed."""
    from shared.maintenance import run_maintenance

    if timer.past_due:
        logger.warning("nightly maintenance is running past its scheduled time")
    summary = await run_maintenance(get_settings())
    logger.info("nightly maintenance: %s", summary.describe())
