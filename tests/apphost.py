"""Test helpers: call registered functions directly, or run the app on the local host in a subprocess."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import azure.functions as func

from devtools.local_tokens import build_claims, load_or_create_signing_key, sign_token

ROOT = Path(__file__).resolve().parent.parent


def mint(**claims: Any) -> str:
    """Sign a token with the local key (the one AUTH_LOCAL_JWKS_FILE points at in tests)."""
    key, _ = load_or_create_signing_key()
    return sign_token(build_claims(**claims), key)


def bearer(**claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(**claims)}"}


@functools.cache
def registered_functions() -> dict[str, Any]:
    """Map each registered function's name to its Function object.

    Cached because FunctionApp.get_functions() may run once per app: a second call fails its
    own duplicate-name check.
    """
    import function_app

    return {function.get_function_name(): function for function in function_app.app.get_functions()}


def find_function(name: str) -> Any:
    function = registered_functions().get(name)
    if function is None:
        raise LookupError(f"no function named {name!r} is registered")
    return function.get_user_function()


async def call_function(
    name: str,
    *,
    method: str = "GET",
    route_params: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    body: Any = None,
    raw_body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> func.HttpResponse:
    """Call a registered HTTP function with a real ``azure.functions.HttpRequest``."""
    if raw_body is None:
        raw_body = b"" if body is None else json.dumps(body).encode()
    request = func.HttpRequest(
        method=method,
        url=f"http://127.0.0.1/api/{name}",
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params=dict(route_params or {}),
        body=raw_body,
    )
    response: func.HttpResponse = await find_function(name)(request)
    return response


def response_json(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def stored_thread_id(thread_id: str, **claims: Any) -> str:
    """Return the id the app stores ``thread_id`` under for the caller that ``claims`` describe."""
    from shared.conversations import storage_thread_id

    token = build_claims(**claims)
    if "scp" in token:
        owner = f"{token['tid']}/user/{token['oid']}"
    else:
        owner = f"{token['tid']}/app/{token.get('azp') or token.get('appid')}"
    return storage_thread_id(owner, thread_id)
