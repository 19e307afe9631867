"""Serve the function app over HTTP without Azure Functions Core Tools.

    python scripts/local_host.py [--host 127.0.0.1] [--port 7071]

Routes and methods come from the FunctionApp's own registered functions (no second route table);
each request reaches the function as a real ``azure.functions.HttpRequest``. As with ``func start``,
the values in ``local.settings.json`` become environment variables (variables already set win), the
route prefix comes from ``host.json``, and a non-HTTP function such as the timer runs on demand with
``POST /admin/functions/<name>``. Development only: no function keys, no host features beyond these.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("local_host")


@dataclass(frozen=True)
class HttpRoute:
    name: str
    template: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Callable[..., Any]


def _route_pattern(template: str) -> re.Pattern[str]:
    """Turn a route template like ``threads/{threadId}`` into a regex with one group per parameter."""
    parts = []
    for segment in template.strip("/").split("/"):
        match = re.fullmatch(r"\{\*?([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\??\}", segment)
        if match:
            parts.append(f"(?P<{match.group(1)}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^" + "/".join(parts) + "$", re.IGNORECASE)


def load_local_settings(path: Path) -> None:
    if not path.exists():
        return
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def route_prefix(host_json: Path) -> str:
    if not host_json.exists():
        return "api"
    config = json.loads(host_json.read_text(encoding="utf-8"))
    return str(config.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")


class LocalHost:
    """An aiohttp application that dispatches to the FunctionApp's registered functions."""

    def __init__(self, function_app: Any, prefix: str) -> None:
        self.prefix = prefix
        self.http_routes: list[HttpRoute] = []
        self.other_functions: dict[str, Callable[..., Any]] = {}
        for function in function_app.get_functions():
            trigger = function.get_trigger()
            handler = function.get_user_function()
            name = function.get_function_name()
            if trigger is not None and trigger.get_binding_name() == "httpTrigger":
                binding = trigger.get_dict_repr()
                methods = frozenset(str(getattr(m, "value", m)).upper() for m in binding.get("methods") or [])
                template = binding.get("route") or name
                self.http_routes.append(HttpRoute(name, template, methods, _route_pattern(template), handler))
            else:
                self.other_functions[name.lower()] = handler

    def describe(self, base_url: str) -> str:
        lines = ["Functions:"]
        for route in self.http_routes:
            methods = ",".join(sorted(route.methods)) or "ALL"
            lines.append(f"  {route.name}: [{methods}] {base_url}/{self.prefix}/{route.template}")
        for name in self.other_functions:
            lines.append(f"  {name}: run with POST {base_url}/admin/functions/{name}")
        return "\n".join(lines)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        import azure.functions as func

        path = request.path.strip("/")
        if path.lower().startswith("admin/functions/") and request.method == "POST":
            return await self._run_other(path.split("/", 2)[2])

        prefix = self.prefix + "/" if self.prefix else ""
        if not path.lower().startswith(prefix.lower()):
            return _problem(404, "Not found", f"no function serves {request.path!r}")
        relative = path[len(prefix) :]

        allowed: set[str] = set()
        for route in self.http_routes:
            match = route.pattern.match(relative)
            if match is None:
                continue
            if route.methods and request.method not in route.methods:
                allowed |= route.methods
                continue
            body = await request.read()
            http_request = func.HttpRequest(
                method=request.method,
                url=str(request.url),
                headers=dict(request.headers),
                params=dict(request.query),
                route_params=match.groupdict(),
                body=body,
            )
            response = await _call(route.handler, http_request)
            return _to_aiohttp(response)

        if allowed:
            return _problem(
                405,
                "Method not allowed",
                f"{request.method} is not allowed on {request.path!r}; use {', '.join(sorted(allowed))}",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        return _problem(404, "Not found", f"no function serves {request.path!r}")

    async def _run_other(self, name: str) -> web.StreamResponse:
        from azure.functions.timer import TimerRequest

        handler = self.other_functions.get(name.lower())
        if handler is None:
            return _problem(404, "Not found", f"no non-HTTP function named {name!r}")
        started = time.monotonic()
        # func.TimerRequest is the abstract interface; the worker passes this concrete class.
        timer = TimerRequest(past_due=False)
        try:
            await _call(handler, timer)
        except Exception as err:
            logger.exception("function %s failed", name)
            return _problem(500, "Function failed", f"{name} failed: {type(err).__name__}: {err}")
        logger.info("function %s ran in %.0f ms", name, (time.monotonic() - started) * 1000)
        return web.Response(status=202)


async def _call(handler: Callable[..., Any], argument: Any) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(argument)
    # Synchronous functions run on a thread, as the Python worker runs them.
    return await asyncio.to_thread(handler, argument)


def _to_aiohttp(response: Any) -> web.Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    content_type = response.mimetype or "text/plain"
    charset = (
        response.charset if content_type.startswith(("text/", "application/json", "application/problem")) else None
    )
    result = web.Response(status=response.status_code, body=response.get_body(), headers=headers)
    result.content_type = content_type
    if charset:
        result.charset = charset
    return result


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return web.Response(status=status, text=body, content_type="application/problem+json", headers=headers)


def build_application(function_app: Any, prefix: str) -> tuple[web.Application, LocalHost]:
    host = LocalHost(function_app, prefix)
    application = web.Application(client_max_size=64 * 1024 * 1024)
    # [\s\S] and not ".": a decoded path may contain a newline (%0A), and "." would leave that
    # request to aiohttp's own plain-text 404 instead of the app's problem document.
    application.router.add_route("*", "/{tail:[\\s\\S]*}", host.dispatch)

    async def close_pool(_: web.Application) -> None:
        from shared.database import close_pool

        await close_pool()

    application.on_cleanup.append(close_pool)
    return application, host


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the function app locally, without Core Tools.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port to listen on (default 7071, as func start)")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    load_local_settings(ROOT / "local.settings.json")

    import function_app

    application, host = build_application(function_app.app, route_prefix(ROOT / "host.json"))
    print(host.describe(f"http://{args.host}:{args.port}"), flush=True)
    web.run_app(application, host=args.host, port=args.port, print=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
