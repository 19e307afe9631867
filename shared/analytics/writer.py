"""Write the agent invocations of one request to the daily usage table, in one statement.

Invocations are added up in memory per (date, agent) first, so a statement never updates a row
twice ("ON CONFLICT DO UPDATE command cannot affect row a second time"). Rows are sent sorted by
(date, agent), so concurrent writers lock shared rows in the same order and do not
deadlock each other.

A failed write never fails the request: ``flush_usage`` logs a WARNING with the lost figures and
counts it in a process-wide counter (``lost_write_count``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from shared.analytics.histogram import BUCKET_COUNT, bucket_index
from shared.analytics.pricing import estimate_cost, find_price
from shared.analytics.recorder import Invocation
from shared.database import Pool
from shared.settings import Settings

logger = logging.getLogger(__name__)

# The rows travel as one JSON document: adapting one string costs the client much less than
# adapting thirteen arrays, and each row's histogram and model list stay arrays of their own.
UPSERT_DAILY_USAGE = """
INSERT INTO agent_usage_analytics AS usage (
    date, agent_id, invocation_count, success_count, error_count,
    total_input_tokens, total_output_tokens, total_latency_ms, min_latency_ms, max_latency_ms,
    estimated_cost_usd, latency_histogram, unpriced_models
)
SELECT day, agent_id, invocations, successes, errors,
       input_tokens, output_tokens, latency_total, latency_min, latency_max,
       cost, histogram, unpriced
  FROM jsonb_to_recordset(%(rows)s::jsonb) AS batch(
        day date, agent_id text, invocations bigint, successes bigint, errors bigint,
        input_tokens bigint, output_tokens bigint, latency_total bigint, latency_min integer,
        latency_max integer, cost numeric, histogram bigint[], unpriced text[])
 ORDER BY day, agent_id
ON CONFLICT (date, agent_id) DO UPDATE SET
    invocation_count = usage.invocation_count + excluded.invocation_count,
    success_count = usage.success_count + excluded.success_count,
    error_count = usage.error_count + excluded.error_count,
    total_input_tokens = usage.total_input_tokens + excluded.total_input_tokens,
    total_output_tokens = usage.total_output_tokens + excluded.total_output_tokens,
    total_latency_ms = usage.total_latency_ms + excluded.total_latency_ms,
    min_latency_ms = least(usage.min_latency_ms, excluded.min_latency_ms),
    max_latency_ms = greatest(usage.max_latency_ms, excluded.max_latency_ms),
    estimated_cost_usd = usage.estimated_cost_usd + excluded.estimated_cost_usd,
    latency_histogram = ARRAY(
        SELECT stored + added
          FROM unnest(usage.latency_histogram, excluded.latency_histogram) WITH ORDINALITY AS h(stored, added, i)
         ORDER BY i
    ),
    unpriced_models = CASE
        WHEN excluded.unpriced_models = '{}' THEN usage.unpriced_models
        ELSE ARRAY(SELECT DISTINCT m FROM unnest(usage.unpriced_models || excluded.unpriced_models) AS m ORDER BY m)
    END,
    updated_at = now()
"""


@dataclass
class UsageRow:
    """Figures of one (date, agent) added up from one or more invocations."""

    day: date
    agent_id: str
    invocation_count: int = 0
    success_count: int = 0
    error_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_latency_ms: int = 0
    min_latency_ms: int = 0
    max_latency_ms: int = 0
    cost_usd: Decimal = Decimal(0)
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKET_COUNT)
    unpriced_models: set[str] = field(default_factory=set)

    def add(self, invocation: Invocation, cost_usd: Decimal | None) -> None:
        """Add one invocation; ``cost_usd`` is None when its model has no price."""
        latency = max(0, invocation.latency_ms)
        if self.invocation_count == 0:
            self.min_latency_ms = self.max_latency_ms = latency
        self.invocation_count += 1
        if invocation.succeeded:
            self.success_count += 1
        else:
            self.error_count += 1
        self.input_tokens += invocation.input_tokens
        self.output_tokens += invocation.output_tokens
        self.total_latency_ms += latency
        self.min_latency_ms = min(self.min_latency_ms, latency)
        self.max_latency_ms = max(self.max_latency_ms, latency)
        self.histogram[bucket_index(latency)] += 1
        if cost_usd is None:
            self.unpriced_models.add(invocation.model_name or "unknown")
        else:
            self.cost_usd += cost_usd


def aggregate_invocations(settings: Settings, invocations: Iterable[Invocation]) -> list[UsageRow]:
    """Add up invocations per (date, agent); return the rows sorted by date, then agent.

    An invocation that used no tokens costs nothing even without a price, so only models that
    used tokens and have no price in MODEL_PRICES are listed as unpriced.
    """
    rows: dict[tuple[date, str], UsageRow] = {}
    for invocation in invocations:
        key = (invocation.day, invocation.agent_id)
        row = rows.get(key)
        if row is None:
            row = rows[key] = UsageRow(day=invocation.day, agent_id=invocation.agent_id)
        row.add(invocation, _invocation_cost(settings, invocation))
    return [rows[key] for key in sorted(rows)]


def _invocation_cost(settings: Settings, invocation: Invocation) -> Decimal | None:
    if invocation.input_tokens == 0 and invocation.output_tokens == 0:
        return Decimal(0)
    price = find_price(settings, invocation.model_name)
    if price is None:
        return None
    return estimate_cost(price, invocation.input_tokens, invocation.output_tokens)


def usage_document(rows: Sequence[UsageRow]) -> str:
    """Return the JSON array of rows that UPSERT_DAILY_USAGE reads with jsonb_to_recordset."""
    return json.dumps(
        [
            {
                "day": r.day.isoformat(),
                "agent_id": r.agent_id,
                "invocations": r.invocation_count,
                "successes": r.success_count,
                "errors": r.error_count,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "latency_total": r.total_latency_ms,
                "latency_min": r.min_latency_ms,
                "latency_max": r.max_latency_ms,
                # A string, because a JSON number would pass through a binary float.
                "cost": str(r.cost_usd),
                "histogram": r.histogram,
                "unpriced": sorted(r.unpriced_models),
            }
            for r in rows
        ]
    )


async def write_usage(
    pool: Pool, rows: Sequence[UsageRow], timeout_ms: int, *, connection: AsyncConnection[DictRow] | None = None
) -> None:
    """Upsert ``rows`` into the daily table: one statement, one round trip, one implicit transaction.

    Waiting for a pool connection and running the statement are each limited to ``timeout_ms``.
    At the statement's deadline psycopg sends PostgreSQL a cancel request and waits for the
    statement to stop (at most 5 s more, then it closes the connection); this raises TimeoutError.
    A client-side deadline replaces ``SET LOCAL statement_timeout``, which would need a second
    statement and so a transaction block or a pipeline, costing round trips or client CPU.
    ``connection``, when given, is used instead of one from the pool. Raises whatever failed.
    """
    if not rows:
        return
    params = {"rows": usage_document(rows)}
    timeout = timeout_ms / 1000
    if connection is not None:
        async with asyncio.timeout(timeout):
            await connection.execute(UPSERT_DAILY_USAGE, params)
        return
    async with pool.connection(timeout=timeout) as conn, asyncio.timeout(timeout):
        await conn.execute(UPSERT_DAILY_USAGE, params)


class _LostWrites:
    """Process-wide count of failed analytics writes; callbacks may run on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes = 0
        self.invocations = 0

    def add(self, invocations: int) -> None:
        with self._lock:
            self.writes += 1
            self.invocations += invocations


_lost = _LostWrites()


def lost_write_count() -> int:
    """Return how many analytics writes this process has lost since it started."""
    return _lost.writes


def lost_invocation_count() -> int:
    """Return how many agent invocations the lost writes of this process held."""
    return _lost.invocations


async def flush_usage(
    settings: Settings,
    pool: Pool,
    invocations: Sequence[Invocation],
    *,
    connection: AsyncConnection[DictRow] | None = None,
) -> bool:
    """Write the invocations of one request; return False when the write failed and was logged.

    Raises no ``Exception``: a failed write (database down, table missing, timeout) loses these
    figures, logs them at WARNING and counts one lost write. The write gives up after
    ANALYTICS_WRITE_TIMEOUT_MS waiting for a connection plus the same for the statement (see
    ``write_usage``). Nothing is retried, because a write whose commit was lost on the way back
    may have been applied already.
    """
    if not invocations:
        return True
    rows = aggregate_invocations(settings, invocations)
    timeout_ms = settings.analytics_write_timeout_ms

    try:
        await write_usage(pool, rows, timeout_ms, connection=connection)
    except Exception as err:
        _lost.add(len(invocations))
        logger.warning(
            "lost the analytics write of %d agent invocations (%s): %s: %s",
            len(invocations),
            _describe_rows(rows),
            type(err).__name__,
            str(err).strip() or "no detail",
        )
        return False
    return True


def _describe_rows(rows: Sequence[UsageRow]) -> str:
    return "; ".join(
        f"{r.day.isoformat()} {r.agent_id}: {r.invocation_count} invocations, {r.error_count} errors, "
        f"{r.input_tokens} input and {r.output_tokens} output tokens, {r.total_latency_ms} ms"
        for r in rows
    )
