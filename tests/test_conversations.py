"""Conversations through the registered HTTP functions, on a real PostgreSQL database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.apphost import bearer, call_function, response_json, stored_thread_id

pytestmark = pytest.mark.usefixtures("app_environment")


async def invoke(thread_id: str, body: Any, **claims: Any) -> tuple[int, Any]:
    response = await call_function(
        "invoke_thread", method="POST", route_params={"threadId": thread_id}, body=body, headers=bearer(**claims)
    )
    return response.status_code, response_json(response)


async def read_thread(thread_id: str, **claims: Any) -> tuple[int, Any]:
    response = await call_function("get_thread", route_params={"threadId": thread_id}, headers=bearer(**claims))
    return response.status_code, response_json(response)


def contents(messages: list[dict[str, Any]], role: str) -> list[str]:
    return [m["content"] for m in messages if m["role"] == role]


async def test_turn_reply_has_answer_and_usage() -> None:
    status, body = await invoke("thread-1", {"message": "what is (2 + 3) * 4?"})

    assert status == 200
    assert body["threadId"] == "thread-1"
    assert body["status"] == "completed"
    assert body["interrupts"] == []
    assert contents(body["messages"], "user") == ["what is (2 + 3) * 4?"]
    assert "(2 + 3) * 4 = 20" in contents(body["messages"], "assistant")
    assert body["messages"][-1]["name"] == "supervisor"
    assert body["usage"]["inputTokens"] > 0
    assert body["usage"]["outputTokens"] > 0


async def test_thread_state_persists_across_turns() -> None:
    await invoke("thread-2", {"message": "what is 1 + 1?"})
    status, second = await invoke("thread-2", {"message": "convert 10 km to mi"})

    assert status == 200
    assert contents(second["messages"], "user") == ["convert 10 km to mi"]

    status, thread = await read_thread("thread-2")
    assert status == 200
    assert thread["status"] == "idle"
    assert contents(thread["messages"], "user") == ["what is 1 + 1?", "convert 10 km to mi"]
    assert "1 + 1 = 2" in contents(thread["messages"], "assistant")
    assert "10 km = 6.213712 mi" in contents(thread["messages"], "assistant")


async def test_state_is_stored_in_postgres_checkpoint_tables(app_environment: dict[str, str]) -> None:
    await invoke("thread-3", {"message": "what is 6 * 7?"})

    with psycopg.connect(app_environment["DATABASE_URL"]) as conn:
        stored = stored_thread_id("thread-3")
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (stored,)).fetchone()
        owner = conn.execute("SELECT owner_key FROM threads WHERE thread_id = %s", (stored,)).fetchone()
    assert checkpoints is not None and checkpoints[0] >= 1
    assert owner is not None and owner[0].endswith("/user/33333333-3333-3333-3333-333333333333")


async def test_interrupt_then_approve_books_meeting() -> None:
    status, first = await invoke("thread-4", {"message": "book a design review on 2026-12-24"})

    assert status == 200
    assert first["status"] == "interrupted"
    assert len(first["interrupts"]) == 1
    approval = first["interrupts"][0]["value"]
    assert approval["action"] == "book_meeting"
    assert approval["date"] == "2026-12-24"

    status, pending = await read_thread("thread-4")
    assert pending["status"] == "interrupted"
    assert pending["interrupts"][0]["id"] == first["interrupts"][0]["id"]

    status, resumed = await invoke("thread-4", {"resume": True})
    assert status == 200
    assert resumed["status"] == "completed"
    assert resumed["interrupts"] == []
    replies = contents(resumed["messages"], "assistant")
    assert any(text.startswith("Booked 'design review' on 2026-12-24") for text in replies)

    status, done = await read_thread("thread-4")
    assert done["status"] == "idle"


async def test_interrupt_then_refuse_books_nothing() -> None:
    await invoke("thread-5", {"message": "book a design review on 2026-12-24"})
    status, resumed = await invoke("thread-5", {"resume": False})

    assert status == 200
    assert resumed["status"] == "completed"
    replies = contents(resumed["messages"], "assistant")
    assert any(text.startswith("Not booked") for text in replies)
    assert not any(text.startswith("Booked") for text in replies)


async def test_resume_without_pending_interrupt_is_409() -> None:
    await invoke("thread-6", {"message": "what is 1 + 1?"})
    status, problem = await invoke("thread-6", {"resume": True})

    assert status == 409
    assert problem["code"] == "no_pending_interrupt"


async def test_message_during_interrupt_is_409() -> None:
    await invoke("thread-7", {"message": "book a design review on 2026-12-24"})
    status, problem = await invoke("thread-7", {"message": "what is 1 + 1?"})

    assert status == 409
    assert "resume" in problem["detail"]
    _, thread = await read_thread("thread-7")
    assert thread["status"] == "interrupted"


async def test_unknown_thread_is_404() -> None:
    status, problem = await read_thread("never-created")

    assert status == 404
    assert problem["status"] == 404
    assert problem["title"] == "Thread not found"


async def test_resume_on_unknown_thread_is_404() -> None:
    status, _ = await invoke("never-created", {"resume": True})

    assert status == 404


@pytest.mark.parametrize(
    ("raw_body", "expected_detail"),
    [
        (b"{not json", "request body is not valid JSON at line 1 column 2"),
        (b"", "request body must be a JSON object, got an empty body"),
        (b"[1, 2]", "request body must be a JSON object, got an array"),
        (b'"hello"', "request body must be a JSON object, got a string"),
        (b"\xff\xfe", "request body must be UTF-8 encoded JSON"),
        (b"{}", "the body must have exactly one of 'message' (a new turn) or 'resume' (answer an interrupt)"),
        (b'{"message": 42}', "message must be a string, got a number"),
        (b'{"message": "   "}', "message must not be empty"),
        (b'{"message": "hi", "resume": true}', "the body must have exactly one of"),
        (b'{"message": "What is 1+1? \\ud800"}', "request body has a \\u escape of a lone surrogate"),
        (b'{"resume": {"note": "\\udfff"}}', "request body has a \\u escape of a lone surrogate"),
    ],
)
async def test_malformed_invoke_body_is_400_problem(raw_body: bytes, expected_detail: str) -> None:
    response = await call_function(
        "invoke_thread", method="POST", route_params={"threadId": "t-bad"}, raw_body=raw_body, headers=bearer()
    )

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = response_json(response)
    assert problem["status"] == 400
    assert problem["title"] == "Bad request"
    assert problem["detail"].startswith(expected_detail)
    assert "Traceback" not in problem["detail"]


@pytest.mark.parametrize(
    "thread_id", ["", "a" * 129, "has space", "slash/inside", "ünicode", "semi;colon", ".", "..", "..."]
)
async def test_bad_thread_id_is_400(thread_id: str) -> None:
    response = await call_function(
        "invoke_thread",
        method="POST",
        route_params={"threadId": thread_id},
        body={"message": "hi"},
        headers=bearer(),
    )

    assert response.status_code == 400
    assert response_json(response)["detail"].startswith("threadId must be 1 to 128 letters, digits")


async def test_longest_valid_thread_id_is_accepted() -> None:
    status, body = await invoke("a" * 128, {"message": "hello"})

    assert status == 200
    assert body["threadId"] == "a" * 128


async def test_client_config_keys_rejected_without_fork(app_environment: dict[str, str]) -> None:
    await invoke("thread-config-keys", {"message": "what is 1 + 1?"})
    with psycopg.connect(app_environment["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id LIMIT 1",
            (stored_thread_id("thread-config-keys"),),
        ).fetchone()
    assert row is not None
    older_checkpoint = row[0]

    attempts = [
        {"message": "hi", "config": {"configurable": {"checkpoint_id": older_checkpoint}, "recursion_limit": 1}},
        {"message": "hi", "configurable": {"checkpoint_id": older_checkpoint}},
        {"message": "hi", "checkpoint_id": older_checkpoint, "recursion_limit": 1},
    ]
    for body in attempts:
        status, problem = await invoke("thread-config-keys", body)
        assert status == 400
        assert problem["detail"].startswith("unknown field(s)")

    _, thread = await read_thread("thread-config-keys")
    assert contents(thread["messages"], "user") == ["what is 1 + 1?"]


async def test_message_over_limit_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import reset_settings_cache

    monkeypatch.setenv("MAX_MESSAGE_CHARS", "10")
    reset_settings_cache()
    status, problem = await invoke("thread-long", {"message": "x" * 11})

    assert status == 400
    assert problem["detail"] == "message must be at most 10 characters, got 11"


async def test_body_over_limit_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import reset_settings_cache

    monkeypatch.setenv("MAX_REQUEST_BYTES", "2048")
    reset_settings_cache()
    status, problem = await invoke("thread-big", {"message": "x" * 3000})

    assert status == 413
    assert problem["detail"].startswith("request body must be at most 2048 bytes")


async def test_missing_token_is_401_with_bearer_challenge() -> None:
    response = await call_function(
        "invoke_thread", method="POST", route_params={"threadId": "t"}, body={"message": "hi"}
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in response.headers["WWW-Authenticate"]


async def test_expired_token_is_401_invalid_token() -> None:
    status, problem = await invoke("t", {"message": "hi"}, lifetime_seconds=-3600)

    assert status == 401
    assert problem["status"] == 401


async def test_token_signed_by_unknown_key_is_401() -> None:
    from devtools.local_tokens import build_claims, generate_signing_key, sign_token

    token = sign_token(build_claims(), generate_signing_key())
    response = await call_function(
        "get_thread", route_params={"threadId": "t"}, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_health_needs_no_token_and_reveals_nothing() -> None:
    response = await call_function("health")

    assert response.status_code == 200
    assert response_json(response) == {"status": "ok"}


async def test_thread_without_recorded_turn_state_still_works(app_environment: dict[str, str]) -> None:
    """A thread saved before the threads row recorded its state falls back to reading the checkpoint."""
    await invoke("legacy", {"message": "what is 1 + 1?"})
    await invoke("legacy", {"message": "book a sync on 2026-12-24"})
    with psycopg.connect(app_environment["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "UPDATE threads SET message_count = NULL, pending_interrupt = false WHERE thread_id = %s",
            (stored_thread_id("legacy"),),
        )

    status, refused = await invoke("legacy", {"message": "what is 2 + 2?"})
    assert status == 409
    assert refused["code"] == "no_pending_interrupt"

    status, resumed = await invoke("legacy", {"resume": True})
    assert status == 200
    assert contents(resumed["messages"], "user") == []
    assert any(text.startswith("Booked 'sync'") for text in contents(resumed["messages"], "assistant"))

    status, after = await invoke("legacy", {"message": "what is 2 + 2?"})
    assert status == 200
    assert contents(after["messages"], "user") == ["what is 2 + 2?"]
    with psycopg.connect(app_environment["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT message_count, pending_interrupt FROM threads WHERE thread_id = %s", (stored_thread_id("legacy"),)
        ).fetchone()
    _, thread = await read_thread("legacy")
    assert row == (len(thread["messages"]), False)


async def test_lone_surrogate_message_saves_nothing() -> None:
    raw_body = b'{"message": "What is 1+1? \\ud800"}'
    for _ in range(2):
        response = await call_function(
            "invoke_thread", method="POST", route_params={"threadId": "surrogate"}, raw_body=raw_body, headers=bearer()
        )
        assert response.status_code == 400

    status, _ = await read_thread("surrogate")
    assert status == 404


async def test_failed_first_turn_leaves_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import reset_settings_cache

    # Nothing listens on port 9 of the local host, so the model call fails at once.
    monkeypatch.setenv("MODEL_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_MODEL", "any-model")
    reset_settings_cache()

    status, problem = await invoke("never-saved", {"message": "what is 1 + 1?"})
    assert status == 502
    assert problem["code"] == "upstream_error"

    status, _ = await read_thread("never-saved")
    assert status == 404
    listing = await call_function("list_threads", headers=bearer())
    assert response_json(listing)["threads"] == []


async def test_offline_model_slower_than_model_timeout_is_504(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import reset_settings_cache

    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "3000")
    monkeypatch.setenv("MODEL_TIMEOUT_SECONDS", "1")
    reset_settings_cache()

    status, problem = await invoke("slow-model", {"message": "hello"})

    assert status == 504
    assert problem["detail"] == "the model did not respond within 1 s; nothing of this turn was saved"
    status, _ = await read_thread("slow-model")
    assert status == 404
