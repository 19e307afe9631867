"""Property-based requests to the app on the local host: bad input never gives a 5xx or breaks the contract.

Hypothesis sends malformed and wrong-typed JSON, huge and unicode-heavy values, odd headers, methods
and paths. Every response must be documented in shared/openapi.json for its path, method and status,
with the documented media type and a body that validates against the documented schema. The example
count is bounded so the whole module runs in well under a minute.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from devtools.hosting import LocalHostProcess
from tests.apphost import bearer
from tests.conftest import base_environment, database_url_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT: dict[str, Any] = json.loads((ROOT / "shared" / "openapi.json").read_text(encoding="utf-8"))
PREFIX = DOCUMENT["servers"][0]["url"]
# The analytics endpoints need the analytics queries module, which lands separately.
ANALYTICS_READY = importlib.util.find_spec("shared.analytics.queries") is not None
MAX_MESSAGE_CHARS = 200
MAX_REQUEST_BYTES = 4096


@pytest.fixture(scope="module")
def host(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHostProcess]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    environment = {
        **base_environment(database_url_for(server_url, name)),
        "MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS),
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    }
    process = LocalHostProcess(environment, tmp_path_factory.mktemp("fuzz") / "host.log").start()
    yield process
    process.stop()
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _template_pattern(template: str) -> re.Pattern[str]:
    # Case-insensitive, as routes are in Azure Functions and on the local host.
    return re.compile(re.sub(r"\\\{[A-Za-z]+\\\}", "[^/]+", re.escape(template)), re.IGNORECASE)


TEMPLATES = {template: _template_pattern(template) for template in DOCUMENT["paths"]}


def find_operation(path: str, method: str) -> tuple[dict[str, Any] | None, bool]:
    """Return the operation documented for ``path`` and ``method``, and whether the path is documented at all."""
    # Match the decoded path, as the host routes it: "%2F" in a segment is a "/".
    relative = unquote(path).removeprefix(PREFIX)
    for template, pattern in TEMPLATES.items():
        if pattern.fullmatch(relative):
            return DOCUMENT["paths"][template].get(method.lower()), True
    return None, False


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and len(node) == 1:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def undocumented_fields(schema: dict[str, Any], body: Any, where: str = "") -> list[str]:
    """List the object fields in ``body`` that ``schema`` does not describe, as JSON pointers."""
    schema = resolve(schema)
    found: list[str] = []
    properties = schema.get("properties")
    if isinstance(body, dict) and properties is not None:
        for name, value in body.items():
            if name not in properties:
                found.append(f"{where}/{name}")
            else:
                found += undocumented_fields(properties[name], value, f"{where}/{name}")
    if isinstance(body, list) and "items" in schema:
        for index, item in enumerate(body):
            found += undocumented_fields(schema["items"], item, f"{where}/{index}")
    return found


def check_body(schema: dict[str, Any], body: Any) -> None:
    """Check that ``body`` is valid against ``schema`` and has no field the schema leaves out."""
    # The components go beside the schema, so its "#/components/..." references resolve.
    validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, errors
    assert undocumented_fields(schema, body) == []


PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}


def check_response(method: str, path: str, reply: httpx.Response) -> None:
    """Check that ``reply`` is a documented response of ``method`` ``path``, with a valid body."""
    assert reply.status_code < 500, f"{method} {path} -> {reply.status_code}: {reply.text[:500]}"
    assert "Traceback" not in reply.text

    operation, path_known = find_operation(path, method)
    media_type = reply.headers.get("content-type", "").split(";")[0].strip()
    if operation is None:
        # The host itself replies to paths and methods that no function serves, with a problem document.
        assert reply.status_code == (405 if path_known else 404), f"{method} {path} -> {reply.status_code}"
        if method != "HEAD":
            assert media_type == "application/problem+json"
            check_body(PROBLEM_SCHEMA, reply.json())
        return

    responses = operation["responses"]
    assert str(reply.status_code) in responses, (
        f"{method} {path} -> {reply.status_code} is not documented: {reply.text[:300]}"
    )
    documented = resolve(responses[str(reply.status_code)])
    content = documented.get("content")
    if content is None:
        assert reply.content == b"", f"{method} {path} -> {reply.status_code} must have no body"
        return
    assert media_type in content, f"{method} {path} -> {reply.status_code} sent {media_type!r}, not {list(content)}"
    check_body(content[media_type]["schema"], reply.json())


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
UNICODE_TEXT = st.text(
    st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cf"]), min_size=1, max_size=60
)
MESSAGES = st.one_of(
    st.sampled_from(["what is 2 + 3?", "convert 5 km to mi", "hello", "how many days from 2026-01-01 to 2026-03-01"]),
    UNICODE_TEXT,
    st.text(min_size=MAX_MESSAGE_CHARS - 2, max_size=MAX_MESSAGE_CHARS + 2),
    st.sampled_from(["", "   ", "\u0000", "💥" * 50, "\ud7ff" * 10]),
)
INVOKE_BODIES = st.one_of(
    st.fixed_dictionaries({"message": MESSAGES}),
    st.fixed_dictionaries({"message": JSON_VALUES}),
    st.fixed_dictionaries({"resume": JSON_VALUES}),
    st.dictionaries(st.sampled_from(["message", "resume", "config", "configurable", "checkpoint_id"]), JSON_VALUES),
    JSON_VALUES,
)
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"{", b'{"message": "hi"', b"\xff\xfe\x00", b'{"message": "\\ud800"}', b"[" * 2000 + b"]" * 2000]),
    st.just(b'{"message": "' + b"x" * (MAX_REQUEST_BYTES + 10) + b'"}'),
)

THREAD_IDS = st.one_of(
    st.sampled_from(["fuzz-a", "fuzz-b", "fuzz.c_d", "x" * 128]),
    st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    UNICODE_TEXT,
    st.sampled_from(["x" * 129, "a b", "%00", "ü", "abc\n", "\nabc"]),
)
AGENT_IDS = st.one_of(st.sampled_from(["supervisor", "calculator", "scheduler", "nobody"]), UNICODE_TEXT)
QUERY_VALUES = st.one_of(
    st.sampled_from(["1", "20", "100", "0", "101", "-1", "1e3", "", "2026-01-01", "2026-13-01", "abc"]),
    UNICODE_TEXT,
)
QUERY = st.dictionaries(
    st.sampled_from(["limit", "cursor", "days", "startDate", "endDate", "unknown"]), QUERY_VALUES, max_size=3
)
METHODS = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"])


def _path(template: str, **values: str) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return PREFIX + template


PATHS = st.one_of(
    st.just(_path("/threads")),
    st.just(_path("/openapi.json")),
    st.just(_path("/health")),
    THREAD_IDS.map(lambda t: _path("/threads/{threadId}", threadId=t)),
    THREAD_IDS.map(lambda t: _path("/threads/{threadId}/invoke", threadId=t)),
    AGENT_IDS.map(lambda a: _path("/analytics/agents/{agentId}/daily", agentId=a)),
    st.just(_path("/analytics/agents")),
    st.sampled_from([PREFIX + "/nothing", PREFIX + "/threads/a/b/c", PREFIX + "/THREADS"]),
)


@functools.cache
def _token_headers(kind: str) -> dict[str, str]:
    if kind == "none":
        return {}
    if kind == "garbage":
        return {"Authorization": "Bearer not.a.token"}
    if kind == "basic":
        return {"Authorization": "Basic dXNlcjpwYXNz"}
    if kind == "expired":
        return bearer(lifetime_seconds=-3600)
    return bearer()


HEADERS = st.builds(
    lambda kind, content_type, extra: {**_token_headers(kind), **content_type, **extra},
    st.sampled_from(["valid", "valid", "valid", "none", "garbage", "basic", "expired"]),
    st.sampled_from([{}, {"Content-Type": "application/json"}, {"Content-Type": "text/plain; charset=latin-1"}]),
    st.dictionaries(
        st.sampled_from(["Accept", "X-Forwarded-For", "Content-Encoding", "Accept-Language"]),
        # Leading or trailing spaces are invalid in a header value, and httpx refuses to send them.
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100).map(str.strip),
        max_size=2,
    ),
)


@functools.cache
def client(host: LocalHostProcess) -> httpx.Client:
    """Return one keep-alive client per host, so examples do not pay for a new connection each."""
    return httpx.Client(base_url=host.base_url, timeout=30)


def _is_analytics(path: str) -> bool:
    return path.startswith(PREFIX + "/analytics")


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=METHODS,
    path=PATHS,
    query=QUERY,
    headers=HEADERS,
    body=st.one_of(st.none(), INVOKE_BODIES.map(lambda b: json.dumps(b).encode()), RAW_BODIES),
)
def test_any_request_gets_documented_response(
    host: LocalHostProcess, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes | None
) -> None:
    if _is_analytics(path) and not ANALYTICS_READY:
        return
    reply = client(host).request(method, path, params=query, headers=headers, content=body)

    check_response(method, path, reply)


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(thread_id=THREAD_IDS, body=INVOKE_BODIES)
def test_invoke_bodies_get_documented_response(host: LocalHostProcess, thread_id: str, body: Any) -> None:
    path = _path("/threads/{threadId}/invoke", threadId=thread_id)
    reply = client(host).post(path, json=body, headers=_token_headers("valid"))

    check_response("POST", path, reply)


def test_served_document_is_the_contract(host: LocalHostProcess) -> None:
    reply = httpx.get(f"{host.base_url}{PREFIX}/openapi.json", headers=bearer(), timeout=30)

    assert reply.status_code == 200
    assert reply.json() == DOCUMENT
    check_response("GET", f"{PREFIX}/openapi.json", reply)


def test_documented_happy_paths_validate(host: LocalHostProcess) -> None:
    """Each operation's success response, reached on purpose, matches its schema."""
    client = httpx.Client(base_url=host.base_url, headers=bearer(), timeout=30)
    calls = [
        ("POST", f"{PREFIX}/threads/happy/invoke", {"message": "book a design review on 2026-12-24"}),
        ("GET", f"{PREFIX}/threads/happy", None),
        ("POST", f"{PREFIX}/threads/happy/invoke", {"resume": True}),
        ("POST", f"{PREFIX}/threads/happy/invoke", {"message": "what is 2 + 3?"}),
        ("GET", f"{PREFIX}/threads?limit=1", None),
        ("GET", f"{PREFIX}/health", None),
        ("DELETE", f"{PREFIX}/threads/happy", None),
    ]
    if ANALYTICS_READY:
        calls += [
            ("GET", f"{PREFIX}/analytics/agents", None),
            ("GET", f"{PREFIX}/analytics/agents/calculator/daily?days=3", None),
        ]
    for method, path, body in calls:
        reply = client.request(method, path, json=body)
        assert reply.status_code in (200, 204), f"{method} {path} -> {reply.status_code}: {reply.text[:300]}"
        check_response(method, path.split("?")[0], reply)
    client.close()


@pytest.mark.parametrize("thread_id", ["abc\n", "abc\r\n", "abc\x00"])
def test_thread_id_with_control_character_is_400(host: LocalHostProcess, thread_id: str) -> None:
    path = _path("/threads/{threadId}/invoke", threadId=thread_id)
    reply = client(host).post(path, json={"message": "hello"}, headers=_token_headers("valid"))

    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("threadId must be 1 to 128 letters, digits")
    check_response("POST", path, reply)
