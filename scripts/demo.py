"""Run a scripted conversation against the app on the local host, restarting the app half-way.

    scripts/demo            (installs everything, starts PostgreSQL, then runs this)

Steps: two user turns on one thread; the app process is stopped and a new one started; a third
turn shows the first two were kept; a booking asks for approval (an interrupt) and is resumed.
Every request and reply is printed.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.hosting import LocalHostProcess  # noqa: E402
from devtools.local_tokens import build_claims, load_or_create_signing_key, sign_token  # noqa: E402


def step(number: int, text: str) -> None:
    print(f"\n=== Step {number}: {text}", flush=True)


def show_reply(reply: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = reply.json()
    print(f"<-- {reply.status_code} status={body.get('status')}")
    for message in body.get("messages", []):
        if message["role"] == "assistant" and message.get("content") and not message.get("toolCalls"):
            print(textwrap.indent(f"[{message['name']}] {message['content']}", "    "))
    for pending in body.get("interrupts", []):
        print(textwrap.indent(f"[approval needed] {pending['value'].get('question')}", "    "))
    return body


def send(host: LocalHostProcess, thread_id: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    print(f"--> POST /api/threads/{thread_id}/invoke {json.dumps(body)}")
    reply = httpx.post(f"{host.base_url}/api/threads/{thread_id}/invoke", json=body, headers=headers, timeout=60)
    if reply.status_code != 200:
        raise SystemExit(f"demo failed: {reply.status_code} {reply.text}")
    return show_reply(reply)


def main() -> None:
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("DATABASE_URL is not set; run scripts/demo, which starts a local PostgreSQL first")

    example = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    environment = {k: v for k, v in example.items() if v != ""}
    environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
    environment["AUTH_LOCAL_JWKS_FILE"] = str(ROOT / ".local" / "jwks.json")

    key, _ = load_or_create_signing_key()
    headers = {"Authorization": f"Bearer {sign_token(build_claims(), key)}"}
    thread_id = f"demo-{uuid.uuid4().hex[:8]}"
    log_path = ROOT / ".local" / "demo-host.log"
    log_path.parent.mkdir(exist_ok=True)

    step(1, f"start the app on the local host (log in {log_path.relative_to(ROOT)})")
    host = LocalHostProcess(environment, log_path).start()
    print(f"app listening on {host.base_url}")
    try:
        step(2, "first turn")
        send(host, thread_id, {"message": "What is (12 + 30) * 2?"}, headers)
        step(3, "second turn on the same thread")
        send(host, thread_id, {"message": "Convert 42 km to mi"}, headers)

        step(4, "stop the app process and start a new one")
        host.stop()
        host = LocalHostProcess(environment, log_path).start()
        print(f"new app process listening on {host.base_url}")

        step(5, "third turn: the new process continues the thread from PostgreSQL")
        send(host, thread_id, {"message": "How many days from 2026-01-01 to 2026-12-25?"}, headers)
        thread = httpx.get(f"{host.base_url}/api/threads/{thread_id}", headers=headers, timeout=30).json()
        users = [m["content"] for m in thread["messages"] if m["role"] == "user"]
        print(f"the thread now holds {len(users)} user turns: {users}")
        if len(users) != 3:
            raise SystemExit("demo failed: the earlier turns were not kept")

        step(6, "ask for a booking: the scheduler stops for a person's approval")
        pending = send(host, thread_id, {"message": "Book a launch review on 2026-12-18"}, headers)
        if pending["status"] != "interrupted":
            raise SystemExit("demo failed: the booking did not ask for approval")

        step(7, "approve it: the run resumes where it stopped")
        done = send(host, thread_id, {"resume": True}, headers)
        if done["status"] != "completed":
            raise SystemExit("demo failed: the resumed run did not complete")
        print(f"\nDemo complete: thread {thread_id} survived a restart and an approval.")
    finally:
        host.stop()


if __name__ == "__main__":
    main()
