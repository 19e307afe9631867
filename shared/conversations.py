"""The conversation service: run a turn, resume an interrupt, read, list and delete threads.

Each thread has a row in ``threads`` that records its owner and whether a run holds it. A run takes
a lease on that row (one short statement, no connection held while the graph runs), so a second
invoke on a busy thread is turned away at once. While the run lives it renews the lease every third
of RUN_LEASE_SECONDS, one short statement each time, and stops itself if it cannot; a worker that
dies mid-run stops renewing, so its thread is free again when the lease expires.

Turns are all or nothing. LangGraph's ``durability="exit"`` writes the graph's state once, when the
run stops, but it also writes the state reached so far when the run fails or is cancelled. So a turn's
checkpointer keeps those writes in memory, and they are written only after the run returned (done or
stopped at an interrupt), in one transaction that also ends the run's lease, and only if this run
still holds it. A worker killed mid-run, a run over RUN_TIMEOUT_SECONDS, a failed model call or a
lost lease all leave the thread exactly as it was before the turn, and the client sends the turn again. A history that
was saved with a tool call and no result (by an older version, or by hand) is repaired before the
next user message: each unanswered call gets an error result, so no model provider rejects it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import DictRow
from psycopg_pool import PoolTimeout

from shared.database import Pool, get_pool
from shared.errors import (
    AppError,
    BadRequest,
    DatabaseUnavailable,
    NoPendingInterrupt,
    ThreadBusy,
    ThreadNotFound,
    UpstreamError,
    UpstreamTimeout,
)
from shared.settings import Settings

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.types import StateSnapshot

T = TypeVar("T")


logger = logging.getLogger(__name__)

DURABILITY: Final = "exit"
RECURSION_LIMIT = 40
# A repair is saved as the supervisor's output: the saved state then has no next node, and the
# next turn starts at the supervisor as every turn does.
REPAIR_AS_NODE: Final = "supervisor"
RELEASE_TIMEOUT_SECONDS: Final = 1.0

# A new thread starts with no messages; an existing one keeps what its last saved turn recorded.
CLAIM_NEW_OR_OWN_THREAD = """
INSERT INTO threads (thread_id, owner_key, run_id, lease_until, message_count)
VALUES (%(thread_id)s, %(owner)s, %(run_id)s, now() + make_interval(secs => %(lease)s), 0)
ON CONFLICT (thread_id) DO UPDATE
    SET run_id = excluded.run_id, lease_until = excluded.lease_until
    WHERE threads.owner_key = excluded.owner_key
      AND (threads.lease_until IS NULL OR threads.lease_until < now())
RETURNING pending_interrupt, message_count
"""
CLAIM_OWN_THREAD = """
UPDATE threads
   SET run_id = %(run_id)s, lease_until = now() + make_interval(secs => %(lease)s)
 WHERE thread_id = %(thread_id)s AND owner_key = %(owner)s
   AND (lease_until IS NULL OR lease_until < now())
RETURNING pending_interrupt, message_count
"""
SELECT_THREAD_LEASE = """
SELECT owner_key, ceil(extract(epoch FROM lease_until - now()))::int AS lease_seconds_left
  FROM threads WHERE thread_id = %(thread_id)s
"""
RENEW_THREAD_LEASE = """
UPDATE threads SET lease_until = now() + make_interval(secs => %(lease)s)
 WHERE thread_id = %(thread_id)s AND run_id = %(run_id)s
RETURNING thread_id
"""
END_RUN_HOLDING_LEASE = """
UPDATE threads
   SET run_id = NULL, lease_until = NULL, updated_at = now(),
       pending_interrupt = %(pending_interrupt)s, message_count = %(message_count)s
 WHERE thread_id = %(thread_id)s AND run_id = %(run_id)s
RETURNING thread_id
"""
# A thread whose first turn failed has nothing saved: its row goes, so no empty thread is left behind.
RELEASE_THREAD = """
WITH dropped AS (
    DELETE FROM threads
     WHERE thread_id = %(thread_id)s AND run_id = %(run_id)s AND message_count = 0
)
UPDATE threads SET run_id = NULL, lease_until = NULL, updated_at = now()
 WHERE thread_id = %(thread_id)s AND run_id = %(run_id)s AND message_count IS DISTINCT FROM 0
"""
SELECT_OWNED_THREAD = """
SELECT thread_id, created_at, updated_at, lease_until > now() AS running
  FROM threads WHERE thread_id = %(thread_id)s AND owner_key = %(owner)s
"""
SELECT_OWNED_THREADS_PAGE = """
SELECT thread_id, created_at, updated_at
  FROM threads
 WHERE owner_key = %(owner)s
   AND (%(after_updated)s::timestamptz IS NULL OR (updated_at, thread_id) < (%(after_updated)s, %(after_id)s))
 ORDER BY updated_at DESC, thread_id DESC
 LIMIT %(limit)s
"""
DELETE_OWNED_THREAD = """
DELETE FROM threads
 WHERE thread_id = %(thread_id)s AND owner_key = %(owner)s
   AND (lease_until IS NULL OR lease_until < now())
"""


@dataclass
class TurnResult:
    thread_id: str
    status: str
    messages: list[dict[str, Any]]
    interrupts: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {
            "threadId": self.thread_id,
            "status": self.status,
            "messages": self.messages,
            "interrupts": self.interrupts,
            "usage": {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens},
        }


@dataclass
class ThreadView:
    thread_id: str
    status: str
    messages: list[dict[str, Any]]
    interrupts: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "threadId": self.thread_id,
            "status": self.status,
            "messages": self.messages,
            "interrupts": self.interrupts,
        }


@dataclass
class ThreadPage:
    threads: list[dict[str, Any]]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "nextCursor": self.next_cursor}


class TurnSaver(AsyncPostgresSaver):
    """A checkpointer for one turn that keeps the run's writes in memory until ``write_to`` saves them.

    Reads go to the database, so the run starts from the thread as it was saved before the turn.
    """

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self._held: list[Callable[[AsyncPostgresSaver], Awaitable[object]]] = []

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        # NOTE: the checkpoint is kept by reference, because LangGraph passes each save a copy of
        # its own (copy_checkpoint in langgraph 1.2). The metadata is the run loop's object, so it is copied.
        held_metadata = metadata.copy()
        self._held.append(lambda target: target.aput(config, checkpoint, held_metadata, new_versions))
        configurable = config["configurable"]
        return {
            "configurable": {
                "thread_id": configurable["thread_id"],
                "checkpoint_ns": configurable["checkpoint_ns"],
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        held_writes = list(writes)
        self._held.append(lambda target: target.aput_writes(config, held_writes, task_id, task_path))

    async def write_to(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Save the held writes, in their order, on ``conn``; return how many saves there were."""
        target = AsyncPostgresSaver(conn)
        for save in self._held:
            await save(target)
        return len(self._held)


@dataclass(frozen=True)
class _Claim:
    """What the claimed thread row says of the thread's saved state."""

    pending_interrupt: bool
    # None when unknown (a thread saved by an older version): the turn reads the checkpoint.
    message_count: int | None


async def _save_turn(
    conn: psycopg.AsyncConnection[DictRow],
    saver: TurnSaver,
    thread_id: str,
    run_id: uuid.UUID,
    *,
    pending_interrupt: bool,
    message_count: int,
) -> None:
    """Save the turn's checkpoints and end its run in one transaction, if the run still has the lease.

    Raises ``ThreadBusy`` (nothing saved) when another run took the thread after this run's lease
    lapsed: ending the lease and writing the checkpoints commit together or not at all. The row
    records whether the saved state waits for an interrupt answer and how many messages it holds.
    """
    params = {
        "thread_id": thread_id,
        "run_id": run_id,
        "pending_interrupt": pending_interrupt,
        "message_count": message_count,
    }
    async with conn.transaction():
        cur = await conn.execute(END_RUN_HOLDING_LEASE, params)
        if await cur.fetchone() is None:
            raise ThreadBusy(
                f"thread {_shown(thread_id)!r} was taken by another run; "
                "this turn was stopped and nothing of it was saved",
                headers={"Retry-After": "1"},
            )
        await saver.write_to(conn)


# One compiled graph per pool: the pool is per event loop, and so must be the saver on top of it.
_graphs: weakref.WeakKeyDictionary[Pool, CompiledStateGraph[Any, Any, Any, Any]] = weakref.WeakKeyDictionary()


async def _get_graph(settings: Settings, pool: Pool) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Return a graph whose checkpointer is a saver of its own over ``pool``, for one request.

    The graph is compiled once per pool (about 9 ms); each request gets a copy (about 0.02 ms)
    with a new AsyncPostgresSaver, because a saver holds an instance-wide lock around every
    database call and one shared saver would queue all concurrent requests' checkpoint I/O behind
    each other. The pool still bounds the connections.
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    graph = _graphs.get(pool)
    if graph is None:
        from shared.graph.supervisor import compile_supervisor

        # Compiling has no await, so two first requests on one loop cannot both store a graph.
        graph = compile_supervisor(settings, None)
        _graphs[pool] = graph
    return graph.copy(update={"checkpointer": AsyncPostgresSaver(pool)})


def storage_thread_id(owner: str, thread_id: str) -> str:
    """Return the id that ``owner``'s thread ``thread_id`` is stored under, in ``threads`` and the checkpoints.

    Each identity has its own namespace of thread ids, so a client can pick any id without learning
    whether someone else uses it, and can never reach another identity's thread.
    """
    digest = hashlib.sha256(owner.encode()).hexdigest()[:24]
    return f"{digest}:{thread_id}"


def _shown(stored_id: str) -> str:
    """Return the client's thread id of a stored id, for messages."""
    return stored_id.partition(":")[2] or stored_id


def message_to_json(message: BaseMessage) -> dict[str, Any]:
    """Turn a LangChain message into the API's ``{"role", "content", "name"}`` form."""
    roles = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}
    content = message.content
    if not isinstance(content, str):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        content = "".join(parts)
    body: dict[str, Any] = {"role": roles.get(message.type, message.type), "content": content, "name": message.name}
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        body["toolCalls"] = [{"id": c.get("id"), "name": c["name"], "args": c["args"]} for c in tool_calls]
    return body


def _interrupts_to_json(interrupts: Any) -> list[dict[str, Any]]:
    return [{"id": i.id, "value": i.value} for i in interrupts or ()]


async def _claim_thread(
    pool: Pool, thread_id: str, owner: str, run_id: uuid.UUID, settings: Settings, *, create: bool
) -> _Claim:
    params = {"thread_id": thread_id, "owner": owner, "run_id": run_id, "lease": settings.run_lease_seconds}
    async with pool.connection() as conn:
        cur = await conn.execute(CLAIM_NEW_OR_OWN_THREAD if create else CLAIM_OWN_THREAD, params)
        claimed = await cur.fetchone()
        if claimed is not None:
            return _Claim(claimed["pending_interrupt"], claimed["message_count"])
        cur = await conn.execute(SELECT_THREAD_LEASE, params)
        row = await cur.fetchone()

    if row is None or row["owner_key"] != owner:
        raise ThreadNotFound(f"thread {_shown(thread_id)!r} was not found")
    wait = max(1, min(int(row["lease_seconds_left"] or 1), 10))
    raise ThreadBusy(
        f"thread {_shown(thread_id)!r} is running another turn; retry after it finishes",
        headers={"Retry-After": str(wait)},
    )


async def _release_thread(pool: Pool, thread_id: str, run_id: uuid.UUID) -> None:
    try:
        # A short wait: during a database outage the reply to the client must not wait for this.
        async with pool.connection(timeout=RELEASE_TIMEOUT_SECONDS) as conn:
            await conn.execute(RELEASE_THREAD, {"thread_id": thread_id, "run_id": run_id})
    except Exception as err:
        # The lease expires by itself, so a failed release only delays the next turn on this thread.
        logger.warning("could not release thread %r after its run: %s", thread_id, err)


async def _renew_lease_while_running(
    pool: Pool, thread_id: str, run_id: uuid.UUID, lease_seconds: float, claimed_at: float
) -> NoReturn:
    """Renew the run's lease every third of its length until cancelled.

    ``claimed_at`` is the ``time.monotonic()`` at which the claim was sent, so ``claimed_at +
    lease_seconds`` is no later than the lease's real end. A failed renewal is retried until only a
    third of the lease is left; then this raises ``DatabaseUnavailable``. It raises ``ThreadBusy``
    when the row no longer names this run. Either way the caller must stop the run before another
    worker can take the thread and fork it.
    """
    interval = lease_seconds / 3
    expires = claimed_at + lease_seconds
    params = {"thread_id": thread_id, "run_id": run_id, "lease": lease_seconds}
    delay = interval
    while True:
        await asyncio.sleep(delay)
        budget = expires - interval - time.monotonic()
        if budget <= 0:
            raise DatabaseUnavailable(
                f"the turn was stopped because its lease on thread {_shown(thread_id)!r} could not be renewed; "
                "nothing of it was saved",
                headers={"Retry-After": "5"},
            )

        sent = time.monotonic()
        try:
            async with asyncio.timeout(budget), pool.connection(timeout=budget) as conn:
                cur = await conn.execute(RENEW_THREAD_LEASE, params)
                row = await cur.fetchone()
        except (psycopg.OperationalError, PoolTimeout, TimeoutError) as err:
            left = expires - time.monotonic()
            logger.warning("could not renew the lease on thread %r (%.1f s left): %r", thread_id, left, err)
            delay = max(0.1, min(interval / 4, left - interval))
            continue

        if row is None:
            raise ThreadBusy(
                f"thread {_shown(thread_id)!r} was taken by another run; "
                "this turn was stopped and nothing of it was saved",
                headers={"Retry-After": "1"},
            )
        expires = sent + lease_seconds
        delay = interval


async def _run_holding_lease(run: Coroutine[Any, Any, T], keep_lease: Coroutine[Any, Any, NoReturn]) -> T:
    """Await ``run`` while ``keep_lease`` renews the lease; cancel the run if the lease is lost.

    Both are cancelled and awaited when this returns, raises or is cancelled, so no renewal
    outlives the run and no run outlives its lease.
    """
    run_task = asyncio.ensure_future(run)
    lease_task = asyncio.ensure_future(keep_lease)
    try:
        await asyncio.wait((run_task, lease_task), return_when=asyncio.FIRST_COMPLETED)
        if run_task.done():
            return run_task.result()
        lease_task.result()
        raise AssertionError("the lease renewal ended without an error")
    finally:
        run_task.cancel()
        lease_task.cancel()
        await asyncio.gather(run_task, lease_task, return_exceptions=True)


async def _answer_unanswered_tool_calls(
    graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str, state: StateSnapshot
) -> StateSnapshot:
    """Save an error result for each tool call in the thread that has none; return the state to continue from.

    The results go right after the message that made the calls. When that message is not the last
    one, the whole message list is written again (``RemoveMessage(REMOVE_ALL_MESSAGES)`` and then
    every message with its id), because the message reducer can only append or replace.
    """
    from langchain_core.messages import RemoveMessage
    from langgraph.graph.message import REMOVE_ALL_MESSAGES

    from shared.graph.history import repair_tool_results, unanswered_tool_calls

    messages = list(state.values.get("messages", []))
    repaired, changed = repair_tool_results(messages)
    if not changed:
        return state

    appended_only = len(repaired) > len(messages) and all(a is b for a, b in zip(messages, repaired, strict=False))
    update = repaired[len(messages) :] if appended_only else [RemoveMessage(id=REMOVE_ALL_MESSAGES), *repaired]
    # No callbacks here: the analytics recorder must not count this write as a supervisor run.
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    await graph.aupdate_state(config, {"messages": update}, as_node=REPAIR_AS_NODE)
    logger.warning(
        "thread %r had %d unanswered tool call(s); saved an error result for each before the new turn",
        thread_id,
        len(unanswered_tool_calls(messages)),
    )
    return await graph.aget_state(config)


def _model_provider_error(err: BaseException, settings: Settings) -> AppError | None:
    """Map a failed model call to a 504 or 502 problem; None for any other error.

    LangChain's provider integrations raise subclasses of ``langchain_core.exceptions.ModelError``
    for the conditions that every provider reports (timeout, rate limit, server error, ...).
    """
    from langchain_core.exceptions import ModelError, ModelTimeoutError

    if isinstance(err, ModelTimeoutError):
        return UpstreamTimeout(
            f"the model did not respond within {settings.model_timeout_seconds:g} s; nothing of this turn was saved"
        )
    if not isinstance(err, ModelError):
        return None
    status = getattr(err, "status_code", None)
    failure = f"failed with HTTP {status}" if isinstance(status, int) else "failed"
    return UpstreamError(f"the model provider {failure}; nothing of this turn was saved", headers={"Retry-After": "5"})


async def run_turn(
    settings: Settings,
    owner: str,
    thread_id: str,
    *,
    message: str | None = None,
    resume: Any = None,
    is_resume: bool = False,
) -> TurnResult:
    """Run one turn on a thread: a new user message, or the answer to a pending interrupt.

    Raises ``ThreadNotFound`` when the thread belongs to someone else (or, for a resume, does not
    exist), ``ThreadBusy`` when another run holds it, ``NoPendingInterrupt`` for a resume with
    nothing to resume or a message while an approval is pending, and ``UpstreamTimeout`` when the
    run takes longer than RUN_TIMEOUT_SECONDS or a model call longer than MODEL_TIMEOUT_SECONDS;
    ``UpstreamError`` when the model provider fails. A run whose lease cannot be renewed is stopped with
    ``DatabaseUnavailable`` or ``ThreadBusy``. Nothing of a turn that raises is saved.
    Before a new message, unanswered tool calls left in the thread get error results (saved).
    """
    from langchain_core.messages import HumanMessage
    from langgraph.types import Command

    from shared.analytics.recorder import UsageRecorder
    from shared.analytics.writer import flush_usage
    from shared.graph.supervisor import AGENT_NAMES

    public_id, thread_id = thread_id, storage_thread_id(owner, thread_id)
    pool = await get_pool(settings)
    run_id = uuid.uuid4()
    claimed_at = time.monotonic()
    claim = await _claim_thread(pool, thread_id, owner, run_id, settings, create=not is_resume)

    recorder = UsageRecorder(agent_ids=frozenset(AGENT_NAMES))
    started = time.perf_counter()
    outcome = "failed"
    saved = flushed = False
    try:
        graph = await _get_graph(settings, pool)
        config: RunnableConfig = {
            "configurable": {"thread_id": thread_id},
            "callbacks": [recorder],
            "recursion_limit": RECURSION_LIMIT,
        }
        # The claimed row says whether an interrupt waits and how many messages the thread holds.
        # Only a thread saved by an older version lacks the count; its checkpoint is read instead,
        # and its history repaired (unanswered tool calls could be saved before turns were atomic).
        state: StateSnapshot | None = None
        if claim.message_count is None:
            state = await graph.aget_state(config)
            pending, known_count = bool(state.interrupts), len(state.values.get("messages", []))
        else:
            pending, known_count = claim.pending_interrupt, claim.message_count

        if is_resume:
            if not pending:
                raise NoPendingInterrupt(f"thread {_shown(thread_id)!r} has no pending interrupt to resume")
            graph_input: Any = Command(resume=resume)
        else:
            if pending:
                raise NoPendingInterrupt(
                    f"thread {_shown(thread_id)!r} is waiting for an answer to its interrupt; "
                    'send {"resume": ...} first'
                )
            if state is not None:
                state = await _answer_unanswered_tool_calls(graph, thread_id, state)
                known_count = len(state.values.get("messages", []))
            graph_input = {"messages": [HumanMessage(content=message or "")]}

        saver = TurnSaver(pool)
        turn_graph = graph.copy(update={"checkpointer": saver})
        try:
            output = await asyncio.wait_for(
                _run_holding_lease(
                    turn_graph.ainvoke(graph_input, config, durability=DURABILITY),
                    _renew_lease_while_running(pool, thread_id, run_id, settings.run_lease_seconds, claimed_at),
                ),
                timeout=settings.run_timeout_seconds,
            )
        except TimeoutError:
            recorder.close_unfinished()
            raise UpstreamTimeout(
                f"the turn took longer than {settings.run_timeout_seconds:g} s and was stopped; nothing of it was saved"
            ) from None
        except Exception as err:
            mapped = _model_provider_error(err, settings)
            if mapped is None:
                raise
            raise mapped from err
        messages = output.get("messages", [])
        interrupts = _interrupts_to_json(output.get("__interrupt__"))
        async with pool.connection() as conn:
            await _save_turn(
                conn, saver, thread_id, run_id, pending_interrupt=bool(interrupts), message_count=len(messages)
            )
            saved = True
            # The usage write reuses the connection of the save, one pool checkout fewer per turn.
            flushed = True
            await flush_usage(settings, pool, recorder.invocations, connection=conn)

        # The message reducer appends new messages and never reorders, so this turn's are the tail.
        new_messages = messages[known_count:]
        outcome = "interrupted" if interrupts else "completed"
        return TurnResult(
            thread_id=public_id,
            status=outcome,
            messages=[message_to_json(m) for m in new_messages],
            interrupts=interrupts,
            input_tokens=recorder.input_tokens,
            output_tokens=recorder.output_tokens,
        )
    finally:
        if not saved:
            await _release_thread(pool, thread_id, run_id)
        if not flushed:
            # Invocations still open when the run failed or was cancelled are recorded as errors.
            recorder.close_unfinished()
            await flush_usage(settings, pool, recorder.invocations)
        logger.info(
            "turn on thread %r %s in %.0f ms (%d agent invocations)",
            thread_id,
            outcome,
            (time.perf_counter() - started) * 1000,
            len(recorder.invocations),
        )


async def get_thread(settings: Settings, owner: str, thread_id: str) -> ThreadView:
    """Return the thread's whole visible conversation; ``ThreadNotFound`` unless ``owner`` owns it."""
    public_id, thread_id = thread_id, storage_thread_id(owner, thread_id)
    pool = await get_pool(settings)
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_OWNED_THREAD, {"thread_id": thread_id, "owner": owner})
        row = await cur.fetchone()
    if row is None:
        raise ThreadNotFound(f"thread {_shown(thread_id)!r} was not found")

    graph = await _get_graph(settings, pool)
    state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    interrupts = _interrupts_to_json(state.interrupts)
    return ThreadView(
        thread_id=public_id,
        status="interrupted" if interrupts else "idle",
        messages=[message_to_json(m) for m in state.values.get("messages", [])],
        interrupts=interrupts,
    )


def _encode_cursor(updated_at: datetime, thread_id: str) -> str:
    raw = f"{updated_at.isoformat()}|{thread_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, thread_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), thread_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor must be a nextCursor value from a previous page") from None


async def list_threads(settings: Settings, owner: str, *, limit: int, cursor: str | None) -> ThreadPage:
    """Return one page of the owner's threads, most recently updated first."""
    after_updated, after_id = _decode_cursor(cursor) if cursor else (None, "")
    pool = await get_pool(settings)
    params = {"owner": owner, "after_updated": after_updated, "after_id": after_id, "limit": limit + 1}
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_OWNED_THREADS_PAGE, params)
        rows = await cur.fetchall()

    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["updated_at"], page[-1]["thread_id"]) if len(rows) > limit else None
    return ThreadPage(
        threads=[
            {
                "threadId": _shown(r["thread_id"]),
                "createdAt": r["created_at"].isoformat(),
                "updatedAt": r["updated_at"].isoformat(),
            }
            for r in page
        ],
        next_cursor=next_cursor,
    )


async def delete_thread(settings: Settings, owner: str, thread_id: str) -> None:
    """Delete the thread's checkpoints and its ownership record.

    Checkpoints go first: if the worker dies in between, the thread is still listed and the
    client's retry of the delete finishes the job. Raises ``ThreadNotFound`` unless ``owner`` owns
    it and ``ThreadBusy`` while a run holds it.
    """
    thread_id = storage_thread_id(owner, thread_id)
    pool = await get_pool(settings)
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_OWNED_THREAD, {"thread_id": thread_id, "owner": owner})
        row = await cur.fetchone()
    if row is None:
        raise ThreadNotFound(f"thread {_shown(thread_id)!r} was not found")
    if row["running"]:
        raise ThreadBusy(
            f"thread {_shown(thread_id)!r} is running a turn; retry after it finishes", headers={"Retry-After": "2"}
        )

    graph = await _get_graph(settings, pool)
    checkpointer = graph.checkpointer
    await checkpointer.adelete_thread(thread_id)  # type: ignore[union-attr]
    async with pool.connection() as conn:
        await conn.execute(DELETE_OWNED_THREAD, {"thread_id": thread_id, "owner": owner})
    logger.info("deleted thread %r", thread_id)
