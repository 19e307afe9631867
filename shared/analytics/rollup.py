"""Move old daily usage rows into monthly rows, whole months at a time, and expire monthly rows.

A daily row is past retention when its date is more than ANALYTICS_DAILY_RETENTION_DAYS before
today (UTC). A month is rolled up only when all its days are past retention, so each month is
either daily or monthly. Each month moves in its own transaction: the monthly upsert and the
daily delete commit together or not at all, so a crash neither loses nor double-counts. Running
the rollup again is harmless: a month already moved has no daily rows left.

Months that have ended but keep their daily rows are closed: their exact per-agent totals go into
agent_usage_analytics_month_totals, which the usage summary reads for whole months in its range.
A write dated in a closed month reopens it (a trigger of migration 0007), and the next run closes
it again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from shared.analytics.histogram import BUCKET_COUNT

logger = logging.getLogger(__name__)

# A rolled-up month that a concurrent write changed is tried again this many times.
MAX_MONTH_ATTEMPTS = 3

SELECT_MONTHS_TO_ROLL_UP = """
SELECT DISTINCT date_trunc('month', date)::date AS month
  FROM agent_usage_analytics
 WHERE date < %(boundary)s
 ORDER BY month
"""

# REPEATABLE READ: the delete below removes exactly the rows this upsert read. A row that a
# request updates in between makes the delete fail with a serialization error, and the month is
# tried again, instead of deleting figures the monthly row does not hold.
SET_REPEATABLE_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"

# Element-wise sum of the month's histograms, one sum per bucket.
_HISTOGRAM_SUM = sql.SQL("ARRAY[{}]::bigint[]").format(
    sql.SQL(", ").join(
        sql.SQL("sum(daily.latency_histogram[{}])").format(sql.Literal(i + 1)) for i in range(BUCKET_COUNT)
    )
)

# One row per agent with the sums of its daily rows in one month (from %(month)s to the day
# before %(next_month)s), in the column order of the monthly and month totals tables.
_SELECT_MONTH_SUMS = sql.SQL("""
WITH unpriced AS (
    SELECT d.agent_id, array_agg(DISTINCT model ORDER BY model) AS models
      FROM agent_usage_analytics AS d, unnest(d.unpriced_models) AS model
     WHERE d.date >= %(month)s AND d.date < %(next_month)s AND d.unpriced_models <> '{{}}'
     GROUP BY d.agent_id
)
SELECT %(month)s::date, daily.agent_id, sum(daily.invocation_count), sum(daily.success_count),
       sum(daily.error_count), sum(daily.total_input_tokens), sum(daily.total_output_tokens),
       sum(daily.total_latency_ms), min(daily.min_latency_ms), max(daily.max_latency_ms),
       sum(daily.estimated_cost_usd), {histogram_sum}, coalesce(unpriced.models, '{{}}')
  FROM agent_usage_analytics AS daily
  LEFT JOIN unpriced USING (agent_id)
 WHERE daily.date >= %(month)s AND daily.date < %(next_month)s
 GROUP BY daily.agent_id, unpriced.models
 ORDER BY daily.agent_id
""").format(histogram_sum=_HISTOGRAM_SUM)

UPSERT_MONTHLY_USAGE = sql.SQL("""
INSERT INTO agent_usage_analytics_monthly AS monthly (
    month, agent_id, invocation_count, success_count, error_count,
    total_input_tokens, total_output_tokens, total_latency_ms, min_latency_ms, max_latency_ms,
    estimated_cost_usd, latency_histogram, unpriced_models
)
{month_sums}
ON CONFLICT (month, agent_id) DO UPDATE SET
    invocation_count = monthly.invocation_count + excluded.invocation_count,
    success_count = monthly.success_count + excluded.success_count,
    error_count = monthly.error_count + excluded.error_count,
    total_input_tokens = monthly.total_input_tokens + excluded.total_input_tokens,
    total_output_tokens = monthly.total_output_tokens + excluded.total_output_tokens,
    total_latency_ms = monthly.total_latency_ms + excluded.total_latency_ms,
    min_latency_ms = least(monthly.min_latency_ms, excluded.min_latency_ms),
    max_latency_ms = greatest(monthly.max_latency_ms, excluded.max_latency_ms),
    estimated_cost_usd = monthly.estimated_cost_usd + excluded.estimated_cost_usd,
    latency_histogram = ARRAY(
        SELECT stored + added
          FROM unnest(monthly.latency_histogram, excluded.latency_histogram) WITH ORDINALITY AS h(stored, added, i)
         ORDER BY i
    ),
    unpriced_models = ARRAY(
        SELECT DISTINCT m FROM unnest(monthly.unpriced_models || excluded.unpriced_models) AS m ORDER BY m
    ),
    updated_at = now()
""").format(month_sums=_SELECT_MONTH_SUMS)

DELETE_ROLLED_UP_DAILY_USAGE = """
DELETE FROM agent_usage_analytics WHERE date >= %(month)s AND date < %(next_month)s
"""

# Deletes the month's totals too (ON DELETE CASCADE): a rolled-up month is read from its monthly
# rows, and keeping its totals would count it twice.
DELETE_CLOSED_MONTH = "DELETE FROM agent_usage_analytics_closed_months WHERE month = %(month)s"

# Months before the current one that still have daily rows and are not closed.
SELECT_MONTHS_TO_CLOSE = """
SELECT date_trunc('month', date)::date AS month
  FROM agent_usage_analytics
 WHERE date < %(current_month)s
EXCEPT
SELECT month FROM agent_usage_analytics_closed_months
 ORDER BY month
"""

# SHARE mode conflicts with the ROW EXCLUSIVE lock of every write, so it waits for writes in
# progress to commit and holds new ones back until the month's totals commit. The totals then
# contain every write committed before them, and every later write dated in the month fires the
# trigger that reopens it. Writers wait at most CLOSE_LOCK_TIMEOUT plus the time to sum one month.
LOCK_DAILY_USAGE_AGAINST_WRITES = "LOCK TABLE agent_usage_analytics IN SHARE MODE"
CLOSE_LOCK_TIMEOUT = "1s"
SET_CLOSE_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{CLOSE_LOCK_TIMEOUT}'"

# No row when another run closed the month first; that run wrote its totals.
INSERT_CLOSED_MONTH = """
INSERT INTO agent_usage_analytics_closed_months (month) VALUES (%(month)s)
ON CONFLICT (month) DO NOTHING
"""

INSERT_MONTH_TOTALS = sql.SQL("""
INSERT INTO agent_usage_analytics_month_totals (
    month, agent_id, invocation_count, success_count, error_count,
    total_input_tokens, total_output_tokens, total_latency_ms, min_latency_ms, max_latency_ms,
    estimated_cost_usd, latency_histogram, unpriced_models
)
{month_sums}
""").format(month_sums=_SELECT_MONTH_SUMS)

DELETE_EXPIRED_MONTHLY_USAGE = "DELETE FROM agent_usage_analytics_monthly WHERE month < %(oldest_kept)s"

# A test hook called between the monthly upsert and the daily delete, inside the transaction.
BeforeDailyDelete = Callable[[date], Awaitable[None]]


@dataclass
class RollupResult:
    """Changes made by one rollup run."""

    months: list[date] = field(default_factory=list)
    daily_rows_rolled_up: int = 0
    monthly_rows_written: int = 0
    monthly_rows_deleted: int = 0
    months_closed: list[date] = field(default_factory=list)
    month_totals_written: int = 0


def first_day_of_month(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, count: int) -> date:
    """Return the first day of the month ``count`` months after ``month`` (before, when negative)."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def rollup_boundary(today: date, daily_retention_days: int) -> date:
    """Return the first day that stays daily: every month before it is wholly past retention.

    A day is past retention when it is more than ``daily_retention_days`` days before ``today``,
    so the oldest day kept is ``today - daily_retention_days``, and its month stays daily too.
    """
    return first_day_of_month(today - timedelta(days=daily_retention_days))


def oldest_kept_month(today: date, monthly_retention_months: int) -> date:
    """Return the oldest month kept: the current month counts as the first of the months kept."""
    return add_months(first_day_of_month(today), -(monthly_retention_months - 1))


async def roll_up_usage(
    conn: psycopg.AsyncConnection[DictRow],
    *,
    today: date,
    daily_retention_days: int,
    monthly_retention_months: int,
    before_daily_delete: BeforeDailyDelete | None = None,
) -> RollupResult:
    """Roll daily rows past retention into monthly rows, delete expired monthly rows, close ended months.

    ``conn`` must be in autocommit mode; each month is one transaction on it. The caller
    serializes runs (``shared.maintenance`` holds an advisory lock), though a second concurrent
    run would only find nothing left to move and no month left to close.
    """
    result = RollupResult()
    boundary = rollup_boundary(today, daily_retention_days)
    cur = await conn.execute(SELECT_MONTHS_TO_ROLL_UP, {"boundary": boundary})
    months = [row["month"] for row in await cur.fetchall()]

    for month in months:
        daily_rows, monthly_rows = await _roll_up_month(conn, month, before_daily_delete)
        result.months.append(month)
        result.daily_rows_rolled_up += daily_rows
        result.monthly_rows_written += monthly_rows
        logger.info(
            "rolled up %d daily usage rows of %s into %d monthly rows",
            daily_rows,
            month.strftime("%Y-%m"),
            monthly_rows,
        )

    oldest_kept = oldest_kept_month(today, monthly_retention_months)
    cur = await conn.execute(DELETE_EXPIRED_MONTHLY_USAGE, {"oldest_kept": oldest_kept})
    result.monthly_rows_deleted = cur.rowcount
    if cur.rowcount:
        logger.info("deleted %d monthly usage rows before %s", cur.rowcount, oldest_kept.strftime("%Y-%m"))

    await close_months(conn, today, result)
    return result


async def close_months(conn: psycopg.AsyncConnection[DictRow], today: date, result: RollupResult) -> None:
    """Write the totals of each ended month that keeps daily rows and is not closed; add them to ``result``.

    Runs after the rollup, so months it moved are not summed. Each month is one transaction. When
    the lock on the daily table times out because a write holds it longer than CLOSE_LOCK_TIMEOUT,
    that month and the later ones stay open until the next run. An open month costs the summary
    speed, not exactness.
    """
    cur = await conn.execute(SELECT_MONTHS_TO_CLOSE, {"current_month": first_day_of_month(today)})
    months = [row["month"] for row in await cur.fetchall()]

    for month in months:
        params = {"month": month, "next_month": add_months(month, 1)}
        try:
            async with conn.transaction():
                await conn.execute(SET_CLOSE_LOCK_TIMEOUT)
                await conn.execute(LOCK_DAILY_USAGE_AGAINST_WRITES)
                cur = await conn.execute(INSERT_CLOSED_MONTH, params)
                if cur.rowcount == 0:
                    continue
                cur = await conn.execute(INSERT_MONTH_TOTALS, params)
        except psycopg.errors.LockNotAvailable:
            logger.warning(
                "left %s open: no lock on the daily usage table after %s; the next run closes it",
                month.strftime("%Y-%m"),
                CLOSE_LOCK_TIMEOUT,
            )
            return
        result.months_closed.append(month)
        result.month_totals_written += cur.rowcount
        logger.info("closed %s with totals for %d agents", month.strftime("%Y-%m"), cur.rowcount)


async def _roll_up_month(
    conn: psycopg.AsyncConnection[DictRow], month: date, before_daily_delete: BeforeDailyDelete | None
) -> tuple[int, int]:
    """Move one month in one transaction; return (daily rows deleted, monthly rows written)."""
    params = {"month": month, "next_month": add_months(month, 1)}
    for attempt in range(1, MAX_MONTH_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(SET_REPEATABLE_READ)
                cur = await conn.execute(UPSERT_MONTHLY_USAGE, params)
                monthly_rows = cur.rowcount
                if before_daily_delete is not None:
                    await before_daily_delete(month)
                cur = await conn.execute(DELETE_ROLLED_UP_DAILY_USAGE, params)
                daily_rows = cur.rowcount
                await conn.execute(DELETE_CLOSED_MONTH, params)
                return daily_rows, monthly_rows
        except psycopg.errors.SerializationFailure:
            if attempt == MAX_MONTH_ATTEMPTS:
                raise
            logger.warning(
                "daily usage of %s changed while it was rolled up; trying again (attempt %d of %d)",
                month.strftime("%Y-%m"),
                attempt + 1,
                MAX_MONTH_ATTEMPTS,
            )
    raise AssertionError("unreachable")
