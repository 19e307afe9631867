"""Importing the app: no settings needed, no I/O, every function registered (a misconfigured app still lists them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter so nothing the test session imported hides what the app imports.
PROBE = r"""
import asyncio, json, logging, socket, sys

connections = []
real_connect = socket.socket.connect
def record_connect(self, address):
    connections.append(repr(address))
    return real_connect(self, address)
socket.socket.connect = record_connect

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger().addHandler(Keep())

import function_app
import azure.functions as func

heavy = sorted(m for m in ("langgraph", "langchain_core", "psycopg", "psycopg_pool") if m in sys.modules)
functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
connections_at_import = list(connections)

request = func.HttpRequest(method="POST", url="http://127.0.0.1/api/threads/t/invoke", headers={},
                           params={}, route_params={"threadId": "t"}, body=b'{"message": "hi"}')
response = asyncio.run(functions["invoke_thread"].get_user_function()(request))
print(json.dumps({
    "functions": sorted(functions),
    "triggers": {n: f.get_trigger().get_binding_name() for n, f in functions.items()},
    "heavy_modules_at_import": heavy,
    "connections_at_import": connections_at_import,
    "status": response.status_code,
    "content_type": response.mimetype,
    "body": json.loads(response.get_body()),
    "log": records,
}))
"""


def run_probe(environment: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "AUTH_", "MODEL_"))}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_import_without_settings_registers_every_function() -> None:
    result = run_probe({})

    assert result["functions"] == [
        "agent_usage_daily",
        "agent_usage_summary",
        "delete_thread",
        "get_thread",
        "health",
        "invoke_thread",
        "list_threads",
        "nightly_maintenance",
        "openapi_document",
    ]
    triggers = result["triggers"]
    assert isinstance(triggers, dict)
    assert triggers["nightly_maintenance"] == "timerTrigger"
    assert result["connections_at_import"] == []
    assert result["heavy_modules_at_import"] == []


def test_request_without_settings_gets_503_naming_the_setting() -> None:
    result = run_probe({})

    assert result["status"] == 503
    assert result["content_type"] == "application/problem+json"
    body = result["body"]
    assert isinstance(body, dict)
    assert (
        body["detail"] == "setting DATABASE_URL is missing; set it to a value like 'postgresql://user@host:5432/dbname'"
    )
    assert "Traceback" not in json.dumps(body)
    log = result["log"]
    assert isinstance(log, list)
    assert any("setting DATABASE_URL is missing" in line for line in log)


def test_request_with_missing_tenant_names_auth_tenant_id() -> None:
    # The database is unreachable on purpose (port 9 discards): settings fail first, before any I/O.
    result = run_probe({"DATABASE_URL": "postgresql://app@127.0.0.1:9/app"})

    assert result["status"] == 503
    body = result["body"]
    assert isinstance(body, dict)
    assert body["detail"].startswith("setting AUTH_TENANT_ID is missing")
    assert result["connections_at_import"] == []


def test_malformed_setting_names_setting_and_valid_form() -> None:
    result = run_probe(
        {
            "DATABASE_URL": "postgresql://app@127.0.0.1:9/app",
            "AUTH_TENANT_ID": "11111111-1111-1111-1111-111111111111",
            "AUTH_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
            "DATABASE_POOL_MAX_SIZE": "lots",
        }
    )

    assert result["status"] == 503
    body = result["body"]
    assert isinstance(body, dict)
    assert body["detail"] == "setting DATABASE_POOL_MAX_SIZE must be an integer from 1 to 200, got 'lots'"
