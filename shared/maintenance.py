"""The nightly job: roll up old usage analytics and apply conversation retention.

One run, in order: usage rollup, monthly expiry and closing of ended months
(``shared.analytics.rollup``), then threads idle longer than THREAD_DELETE_AFTER_DAYS are
deleted, then threads idle longer than THREAD_COMPACT_AFTER_DAYS are compacted (old checkpoints
deleted). Idle time is measured from ``threads.updated_at``, which every turn sets when it ends.

Runs are serialized with a PostgreSQL advisory lock: a run that finds the lock taken does nothing,
logs a warning and returns a summary marked ``skipped``. Every step is idempotent and commits in
bounded batches, so a run that fails or times out is finished by the next one. Exceptions
propagate, so the timer records a failed run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.analytics.rollup import BeforeDailyDelete, roll_up_usage
from shared.database import Pool, get_pool
from shared.settings import Settings

logger = logging.getLogger(__name__)

# Arbitrary constant shared by every worker of this app, distinct from the schema lock's key.
MAINTENANCE_LOCK_KEY = 7_283_512_002
THREAD_BATCH_SIZE = 100
# Lease the job takes on a thread it works on; a turn sent meanwhile gets 409 and retries.
THREAD_LEASE_SECONDS = 300

TRY_MAINTENANCE_LOCK = "SELECT pg_try_advisory_lock(%s) AS locked"
RELEASE_MAINTENANCE_LOCK = "SELECT pg_advisory_unlock(%s)"

# Takes a lease on idle threads exactly as a run does, so no turn starts on them meanwhile, and
# skips threads a run holds. SKIP LOCKED keeps a concurrent turn's claim from waiting on this.
CLAIM_THREADS_TO_DELETE = """
UPDATE threads
   SET run_id = %(run_id)s, lease_until = now() + make_interval(secs => %(lease)s)
 WHERE thread_id IN (
        SELECT thread_id FROM threads
         WHERE updated_at < %(idle_before)s
           AND (lease_until IS NULL OR lease_until < now())
         ORDER BY updated_at
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED)
RETURNING thread_id
"""
DELETE_CLAIMED_THREADS = """
DELETE FROM threads WHERE thread_id = ANY(%(thread_ids)s) AND run_id = %(run_id)s
"""
# compacted_at < updated_at: a turn has updated the thread since its last compaction.
CLAIM_THREADS_TO_COMPACT = """
UPDATE threads
   SET run_id = %(run_id)s, lease_until = now() + make_interval(secs => %(lease)s)
 WHERE thread_id IN (
        SELECT thread_id FROM threads
         WHERE updated_at < %(idle_before)s
           AND (compacted_at IS NULL OR compacted_at < updated_at)
           AND (lease_until IS NULL OR lease_until < now())
         ORDER BY updated_at
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED)
RETURNING thread_id
"""
# Releases without touching updated_at, so compacting does not make a thread look active.
RELEASE_COMPACTED_THREADS = """
UPDATE threads SET run_id = NULL, lease_until = NULL, compacted_at = now()
 WHERE thread_id = ANY(%(thread_ids)s) AND run_id = %(run_id)s
"""
RELEASE_CLAIMED_THREADS = """
UPDATE threads SET run_id = NULL, lease_until = NULL
 WHERE thread_id = ANY(%(thread_ids)s) AND run_id = %(run_id)s
"""


@dataclass
class MaintenanceSummary:
    """Counts of one maintenance run, for the timer's log line."""

    skipped: bool = False
    months_rolled_up: int = 0
    daily_rows_rolled_up: int = 0
    monthly_rows_written: int = 0
    monthly_rows_deleted: int = 0
    months_closed: int = 0
    threads_deleted: int = 0
    threads_compacted: int = 0
    duration_seconds: float = 0.0

    def describe(self) -> str:
        """Return a one-line summary."""
        if self.skipped:
            return f"skipped: another maintenance run holds the lock ({self.duration_seconds:.1f} s)"
        return (
            f"rolled up {self.daily_rows_rolled_up} daily usage rows of {self.months_rolled_up} months "
            f"into {self.monthly_rows_written} monthly rows and deleted them, "
            f"deleted {self.monthly_rows_deleted} expired monthly rows, "
            f"deleted {self.threads_deleted} idle threads, compacted {self.threads_compacted} threads, "
            f"closed {self.months_closed} months of daily usage, "
            f"in {self.duration_seconds:.1f} s"
        )


async def run_maintenance(
    settings: Settings,
    *,
    now: datetime | None = None,
    before_daily_delete: BeforeDailyDelete | None = None,
) -> MaintenanceSummary:
    """Run the nightly job once; see the module docstring for the steps.

    ``now`` (aware, default the current time) decides every retention boundary, in UTC.
    ``before_daily_delete`` lets tests fail a rollup between its two statements.
    """
    started = time.monotonic()
    current = (now or datetime.now(UTC)).astimezone(UTC)
    summary = MaintenanceSummary()
    pool = await get_pool(settings)

    async with pool.connection() as conn:
        cur = await conn.execute(TRY_MAINTENANCE_LOCK, (MAINTENANCE_LOCK_KEY,))
        row = await cur.fetchone()
        if row is None or not row["locked"]:
            summary.skipped = True
            summary.duration_seconds = time.monotonic() - started
            logger.warning("nightly maintenance skipped: another run holds the maintenance lock")
            return summary
        try:
            rollup = await roll_up_usage(
                conn,
                today=current.date(),
                daily_retention_days=settings.analytics_daily_retention_days,
                monthly_retention_months=settings.analytics_monthly_retention_months,
                before_daily_delete=before_daily_delete,
            )
            summary.months_rolled_up = len(rollup.months)
            summary.daily_rows_rolled_up = rollup.daily_rows_rolled_up
            summary.monthly_rows_written = rollup.monthly_rows_written
            summary.monthly_rows_deleted = rollup.monthly_rows_deleted
            summary.months_closed = len(rollup.months_closed)

            if settings.thread_delete_after_days > 0:
                idle_before = current - timedelta(days=settings.thread_delete_after_days)
                summary.threads_deleted = await delete_idle_threads(pool, idle_before)
            if settings.thread_compact_after_days > 0:
                idle_before = current - timedelta(days=settings.thread_compact_after_days)
                summary.threads_compacted = await compact_idle_threads(pool, idle_before)
        finally:
            await conn.execute(RELEASE_MAINTENANCE_LOCK, (MAINTENANCE_LOCK_KEY,))

    summary.duration_seconds = time.monotonic() - started
    return summary


async def delete_idle_threads(pool: Pool, idle_before: datetime) -> int:
    """Delete threads last updated before ``idle_before``, with their checkpoints; return how many.

    Checkpoints go first, through the checkpointer's own ``adelete_thread``. A run that dies in
    between leaves the ``threads`` row, whose lease expires, so the next run deletes it again.
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    saver = AsyncPostgresSaver(pool)

    async def delete(thread_ids: list[str], run_id: uuid.UUID) -> None:
        for thread_id in thread_ids:
            await saver.adelete_thread(thread_id)
        async with pool.connection() as conn:
            await conn.execute(DELETE_CLAIMED_THREADS, {"thread_ids": thread_ids, "run_id": run_id})
        logger.info("deleted %d idle threads", len(thread_ids))

    return await _process_claimed_batches(pool, CLAIM_THREADS_TO_DELETE, idle_before, delete)


async def compact_idle_threads(pool: Pool, idle_before: datetime) -> int:
    """Compact idle threads' checkpoints; return how many threads were compacted.

    ``shared.compaction.compact_threads`` keeps what the latest state needs, so the whole visible
    conversation stays readable, a new turn continues from it and a pending interrupt still
    resumes. (``AsyncPostgresSaver.aprune`` would break the delta-stored ``messages`` channel.) A
    thread is compacted again only after a turn has updated it.
    """
    from shared.compaction import compact_threads

    async def compact(thread_ids: list[str], run_id: uuid.UUID) -> None:
        await compact_threads(pool, thread_ids)
        async with pool.connection() as conn:
            await conn.execute(RELEASE_COMPACTED_THREADS, {"thread_ids": thread_ids, "run_id": run_id})
        logger.info("compacted %d idle threads", len(thread_ids))

    return await _process_claimed_batches(pool, CLAIM_THREADS_TO_COMPACT, idle_before, compact)


async def _process_claimed_batches(
    pool: Pool,
    claim_sql: str,
    idle_before: datetime,
    process: Callable[[list[str], uuid.UUID], Awaitable[None]],
) -> int:
    """Claim idle threads in batches and process each batch; return how many threads were processed.

    A batch that fails is released for the next run and its exception propagates.
    """
    done = 0
    while True:
        run_id = uuid.uuid4()
        params = {
            "run_id": run_id,
            "lease": THREAD_LEASE_SECONDS,
            "idle_before": idle_before,
            "limit": THREAD_BATCH_SIZE,
        }
        async with pool.connection() as conn:
            cur = await conn.execute(claim_sql, params)
            thread_ids = [row["thread_id"] for row in await cur.fetchall()]
        if not thread_ids:
            return done

        try:
            await process(thread_ids, run_id)
        except BaseException:
            async with pool.connection() as conn:
                await conn.execute(RELEASE_CLAIMED_THREADS, {"thread_ids": thread_ids, "run_id": run_id})
            raise
        done += len(thread_ids)
