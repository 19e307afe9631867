"""Private threads: another identity gets exactly what it would get for a thread that does not exist."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.apphost import bearer, call_function, response_json, stored_thread_id

pytestmark = pytest.mark.usefixtures("app_environment")

ALICE = {"object_id": "aaaaaaaa-0000-0000-0000-000000000001"}
BOB = {"object_id": "bbbbbbbb-0000-0000-0000-000000000002"}
OTHER_TENANT_SAME_OID = {"object_id": ALICE["object_id"], "tenant_id": "99999999-9999-9999-9999-999999999999"}
APP = {"kind": "app", "client_app_id": "cccccccc-0000-0000-0000-000000000003"}


async def request(name: str, claims: dict[str, Any], **kwargs: Any) -> tuple[int, Any]:
    response = await call_function(name, headers=bearer(**claims), **kwargs)
    body = response_json(response) if response.get_body() else None
    return response.status_code, body


async def start_thread(thread_id: str, claims: dict[str, Any], message: str = "what is 1 + 1?") -> None:
    status, _ = await request(
        "invoke_thread", claims, method="POST", route_params={"threadId": thread_id}, body={"message": message}
    )
    assert status == 200


def without_thread_name(problem: dict[str, Any]) -> dict[str, Any]:
    detail = re.sub(r"'(alice-thread|no-such-thread-\d)'", "'X'", problem["detail"])
    return {**problem, "detail": detail}


async def test_other_user_cannot_read_resume_or_delete() -> None:
    await start_thread("alice-thread", ALICE)

    attempts = [
        ("get_thread", {"method": "GET"}),
        ("invoke_thread", {"method": "POST", "body": {"resume": True}}),
        ("delete_thread", {"method": "DELETE"}),
    ]
    for number, (name, extra) in enumerate(attempts):
        stolen = await request(name, BOB, route_params={"threadId": "alice-thread"}, **extra)
        missing = await request(name, BOB, route_params={"threadId": f"no-such-thread-{number}"}, **extra)
        assert stolen[0] == missing[0] == 404, name
        assert without_thread_name(stolen[1]) == without_thread_name(missing[1]), name

    status, thread = await request("get_thread", ALICE, route_params={"threadId": "alice-thread"})
    assert status == 200
    assert [m["content"] for m in thread["messages"] if m["role"] == "user"] == ["what is 1 + 1?"]


async def test_message_to_taken_id_starts_own_thread() -> None:
    """Thread ids are per identity: the same id names another thread, so nothing shows it is taken."""
    await start_thread("shared-id", ALICE, "what is 1 + 1?")

    status, reply = await request(
        "invoke_thread", BOB, method="POST", route_params={"threadId": "shared-id"}, body={"message": "what is 2 + 2?"}
    )

    assert status == 200
    assert [m["content"] for m in reply["messages"] if m["role"] == "user"] == ["what is 2 + 2?"]
    _, bobs = await request("get_thread", BOB, route_params={"threadId": "shared-id"})
    _, alices = await request("get_thread", ALICE, route_params={"threadId": "shared-id"})
    assert [m["content"] for m in bobs["messages"] if m["role"] == "user"] == ["what is 2 + 2?"]
    assert [m["content"] for m in alices["messages"] if m["role"] == "user"] == ["what is 1 + 1?"]


async def test_same_object_id_in_other_tenant_is_another_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import reset_settings_cache

    tenants = "11111111-1111-1111-1111-111111111111,99999999-9999-9999-9999-999999999999"
    monkeypatch.setenv("AUTH_ALLOWED_TENANTS", tenants)
    reset_settings_cache()
    await start_thread("alice-thread", ALICE)

    status, _ = await request("get_thread", OTHER_TENANT_SAME_OID, route_params={"threadId": "alice-thread"})

    assert status == 404


async def test_app_only_token_owns_its_threads() -> None:
    await start_thread("app-thread", APP)

    status, thread = await request("get_thread", APP, route_params={"threadId": "app-thread"})
    assert status == 200
    assert thread["threadId"] == "app-thread"
    status, _ = await request("get_thread", ALICE, route_params={"threadId": "app-thread"})
    assert status == 404


async def test_list_shows_only_own_threads_newest_first() -> None:
    for thread_id in ("a-1", "a-2", "a-3"):
        await start_thread(thread_id, ALICE)
    await start_thread("b-1", BOB)
    await start_thread("a-1", ALICE, "what is 5 + 5?")

    status, page = await request("list_threads", ALICE)

    assert status == 200
    assert [t["threadId"] for t in page["threads"]] == ["a-1", "a-3", "a-2"]
    assert page["nextCursor"] is None
    status, page = await request("list_threads", BOB)
    assert [t["threadId"] for t in page["threads"]] == ["b-1"]


async def test_list_pages_with_cursor_without_gaps_or_repeats() -> None:
    created = [f"page-{n}" for n in range(7)]
    for thread_id in created:
        await start_thread(thread_id, ALICE, "hello")

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        status, page = await request("list_threads", ALICE, params=params)
        assert status == 200
        assert len(page["threads"]) <= 3
        seen.extend(t["threadId"] for t in page["threads"])
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(created))


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, 'limit must be an integer from 1 to 100, got "0"'),
        ({"limit": "101"}, 'limit must be an integer from 1 to 100, got "101"'),
        ({"limit": "ten"}, 'limit must be an integer from 1 to 100, got "ten"'),
        ({"cursor": "not-a-cursor"}, "cursor must be a nextCursor value from a previous page"),
    ],
)
async def test_list_rejects_bad_paging(params: dict[str, str], detail: str) -> None:
    status, problem = await request("list_threads", ALICE, params=params)

    assert status == 400
    assert problem["detail"] == detail


async def test_delete_removes_thread_and_every_checkpoint(app_environment: dict[str, str]) -> None:
    await start_thread("doomed", ALICE)
    await start_thread("kept", ALICE)

    status, body = await request("delete_thread", ALICE, method="DELETE", route_params={"threadId": "doomed"})

    assert status == 204
    assert body is None
    status, _ = await request("get_thread", ALICE, route_params={"threadId": "doomed"})
    assert status == 404
    with psycopg.connect(app_environment["DATABASE_URL"]) as conn:
        counts = {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE thread_id = %s").format(sql.Identifier(table)),
                (stored_thread_id("doomed", **ALICE),),
            ).fetchone()
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "threads")
        }
        kept = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (stored_thread_id("kept", **ALICE),)
        ).fetchone()
    assert counts == {table: (0,) for table in counts}
    assert kept is not None and kept[0] > 0
    status, page = await request("list_threads", ALICE)
    assert [t["threadId"] for t in page["threads"]] == ["kept"]


async def test_deleted_thread_id_can_start_over() -> None:
    await start_thread("reused", ALICE, "what is 1 + 1?")
    await request("delete_thread", ALICE, method="DELETE", route_params={"threadId": "reused"})
    await start_thread("reused", BOB, "what is 2 + 2?")

    status, thread = await request("get_thread", BOB, route_params={"threadId": "reused"})

    assert status == 200
    assert [m["content"] for m in thread["messages"] if m["role"] == "user"] == ["what is 2 + 2?"]
