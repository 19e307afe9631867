"""Read agent usage for the analytics endpoints: a summary per agent, and one agent's days.

Daily rows cover recent days and monthly rows cover months the nightly rollup has moved. A month
is either daily or monthly, so the summary adds daily rows of the range to monthly rows of the
months the range touches. A monthly row counts whole even when the range covers only part of its
month, and the response lists such months in ``coarseMonths``.

A daily month that has ended is usually closed as well: the nightly job keeps its exact totals per
agent (shared/analytics/rollup.py). For each closed month that the range covers whole, the summary
reads those totals, one row per agent, instead of the month's daily rows. The figures are the same,
and a 366-day summary over 200 agents reads some 8,600 rows instead of 73,200.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import sql

from shared.analytics.histogram import BUCKET_COUNT, estimate_percentile
from shared.database import get_pool
from shared.errors import BadRequest
from shared.settings import Settings

DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 366
_AGENT_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# One sum per histogram bucket, which avoids unnesting every row's array and grouping again.
_BUCKET_SUMS = sql.SQL(", ").join(
    sql.SQL("sum(latency_histogram[{i}])::bigint AS {name}").format(
        i=sql.Literal(i + 1), name=sql.Identifier(f"bucket_{i}")
    )
    for i in range(BUCKET_COUNT)
)

# The figures each source contributes per row, in the order the summary adds them up.
_USAGE_COLUMNS = sql.SQL("""agent_id, invocation_count, success_count, error_count, total_input_tokens,
           total_output_tokens, total_latency_ms, min_latency_ms, max_latency_ms,
           estimated_cost_usd, latency_histogram""")

# The spans are the months the range touches, each cut to the range (see ``month_spans``). Daily
# rows are read span by span through the (date, agent_id) index, skipping the spans of closed
# months that the range covers whole, whose totals are read instead. One statement, so one
# snapshot: a month that a late write reopens is read either whole from its totals or from its
# daily rows, never from both or neither.
SELECT_USAGE_SUMMARY = sql.SQL("""
WITH spans AS (
    SELECT month, first_day, last_day, whole
      FROM unnest(%(months)s::date[], %(first_days)s::date[], %(last_days)s::date[], %(whole)s::boolean[])
           AS span(month, first_day, last_day, whole)
),
closed AS (
    SELECT spans.month
      FROM spans
      JOIN agent_usage_analytics_closed_months USING (month)
     WHERE spans.whole
),
usage AS (
    SELECT {columns}
      FROM spans
      JOIN agent_usage_analytics AS daily ON daily.date BETWEEN spans.first_day AND spans.last_day
     WHERE spans.month NOT IN (SELECT month FROM closed)
    UNION ALL
    SELECT {columns}
      FROM agent_usage_analytics_month_totals
     WHERE month IN (SELECT month FROM closed)
    UNION ALL
    SELECT {columns}
      FROM agent_usage_analytics_monthly
     WHERE month BETWEEN date_trunc('month', %(start)s::date)::date AND %(end)s
)
SELECT agent_id,
       sum(invocation_count)::bigint AS invocation_count,
       sum(success_count)::bigint AS success_count,
       sum(error_count)::bigint AS error_count,
       sum(total_input_tokens)::bigint AS total_input_tokens,
       sum(total_output_tokens)::bigint AS total_output_tokens,
       sum(total_latency_ms)::bigint AS total_latency_ms,
       min(min_latency_ms) AS min_latency_ms,
       max(max_latency_ms) AS max_latency_ms,
       sum(estimated_cost_usd) AS estimated_cost_usd,
       {bucket_sums}
  FROM usage
 GROUP BY agent_id
 ORDER BY invocation_count DESC, agent_id
""").format(columns=_USAGE_COLUMNS, bucket_sums=_BUCKET_SUMS)

# Models without a price in the range; daily rows rarely have any, so this reads few arrays.
SELECT_UNPRICED_MODELS = """
SELECT DISTINCT model
  FROM (
    SELECT unpriced_models FROM agent_usage_analytics
     WHERE date BETWEEN %(start)s AND %(end)s AND unpriced_models <> '{}'
    UNION ALL
    SELECT unpriced_models FROM agent_usage_analytics_monthly
     WHERE month BETWEEN date_trunc('month', %(start)s::date)::date AND %(end)s AND unpriced_models <> '{}'
  ) AS rows, unnest(rows.unpriced_models) AS model
 ORDER BY model
"""

# Rolled-up months that the range covers only in part.
SELECT_COARSE_MONTHS = """
SELECT DISTINCT month
  FROM agent_usage_analytics_monthly
 WHERE month BETWEEN date_trunc('month', %(start)s::date)::date AND %(end)s
   AND (month < %(start)s OR (month + interval '1 month - 1 day')::date > %(end)s)
 ORDER BY month
"""

SELECT_DAILY_USAGE = """
SELECT date, invocation_count, total_input_tokens + total_output_tokens AS tokens
  FROM agent_usage_analytics
 WHERE agent_id = %(agent_id)s AND date BETWEEN %(start)s AND %(end)s
"""

# Daily rows exist from the day after the newest rolled-up month; before any rollup, from the
# oldest daily row.
SELECT_DAILY_DATA_FROM = """
SELECT coalesce(
    (SELECT (max(month) + interval '1 month')::date FROM agent_usage_analytics_monthly),
    (SELECT min(date) FROM agent_usage_analytics)
) AS daily_data_from
"""


def today_utc() -> date:
    """Return today's date in UTC, the time zone of every analytics date."""
    return datetime.now(UTC).date()


def parse_date_range(params: Mapping[str, str], *, today: date | None = None) -> tuple[date, date]:
    """Read ``startDate`` and ``endDate`` (YYYY-MM-DD, inclusive) from query parameters.

    A missing endDate is today (UTC) and a missing startDate is 29 days before endDate, a 30-day
    window. Raises ``BadRequest`` naming the parameter for a malformed date, a start after the
    end, or a range longer than 366 days.
    """
    end = _parse_date_param(params, "endDate")
    start = _parse_date_param(params, "startDate")
    if end is None:
        end = today or today_utc()
    if start is None:
        start = end - timedelta(days=DEFAULT_RANGE_DAYS - 1)

    if start > end:
        raise BadRequest(f"startDate must not be after endDate, got startDate {start} and endDate {end}")
    days = (end - start).days + 1
    if days > MAX_RANGE_DAYS:
        raise BadRequest(
            f"startDate and endDate must span at most {MAX_RANGE_DAYS} days, got {days} days from {start} to {end}"
        )
    return start, end


def _parse_date_param(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    try:
        # fromisoformat alone would also take forms like '20260301' and '2026-W09-1'.
        if not _ISO_DATE.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be a date in YYYY-MM-DD form, got {_shorten(raw)!r}") from None


def require_agent_id(raw: str) -> str:
    """Return ``raw`` if it is 1 to 64 letters, digits, '_', '-' or '.'; raise ``BadRequest`` otherwise."""
    if not _AGENT_ID.fullmatch(raw):
        raise BadRequest(f"agentId must be 1 to 64 letters, digits, '_', '-' or '.', got {_shorten(raw)!r}")
    return raw


def _shorten(value: str) -> str:
    return value if len(value) <= 40 else value[:40] + "..."


def month_spans(start: date, end: date) -> dict[str, list[date] | list[bool]]:
    """Split ``start`` to ``end`` (inclusive) at month boundaries, as the array parameters of SELECT_USAGE_SUMMARY.

    Returns each month's first day (``months``), the first and last day of the range inside it
    (``first_days``, ``last_days``) and whether the range covers the month whole (``whole``).
    """
    months: list[date] = []
    first_days: list[date] = []
    last_days: list[date] = []
    whole: list[bool] = []
    month = start.replace(day=1)
    while month <= end:
        next_month = (month + timedelta(days=32)).replace(day=1)
        first_day, last_day = max(month, start), min(next_month - timedelta(days=1), end)
        months.append(month)
        first_days.append(first_day)
        last_days.append(last_day)
        whole.append(first_day == month and last_day == next_month - timedelta(days=1))
        month = next_month
    return {"months": months, "first_days": first_days, "last_days": last_days, "whole": whole}


def rate(part: int, whole: int) -> float:
    """Return ``part / whole`` rounded to 4 places, and 0.0 when ``whole`` is 0."""
    if whole <= 0:
        return 0.0
    return round(part / whole, 4)


async def usage_summary(settings: Settings, start: date, end: date) -> dict[str, Any]:
    """Return each agent's usage from ``start`` to ``end`` (inclusive), most invocations first.

    The body of ``GET /api/analytics/agents``. ``coarseMonths`` lists rolled-up months that the
    range covers only in part but that are counted whole, and ``unpricedModels`` lists models
    whose tokens are not in ``estimatedCostUsd`` because MODEL_PRICES has no price for them.
    """
    params = {"start": start, "end": end}
    pool = await get_pool(settings)
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_USAGE_SUMMARY, {**params, **month_spans(start, end)})
        rows = await cur.fetchall()
        cur = await conn.execute(SELECT_COARSE_MONTHS, params)
        coarse = await cur.fetchall()
        cur = await conn.execute(SELECT_UNPRICED_MODELS, params)
        unpriced = await cur.fetchall()

    return {
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "summary": [_summary_entry(row) for row in rows],
        "coarseMonths": [row["month"].strftime("%Y-%m") for row in coarse],
        "unpricedModels": [row["model"] for row in unpriced],
    }


def _summary_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    invocations = int(row["invocation_count"])
    counts = [int(row[f"bucket_{i}"]) for i in range(BUCKET_COUNT)]
    min_ms, max_ms = int(row["min_latency_ms"]), int(row["max_latency_ms"])
    cost: Decimal = row["estimated_cost_usd"]
    return {
        "agentId": row["agent_id"],
        "invocationCount": invocations,
        "successCount": int(row["success_count"]),
        "errorCount": int(row["error_count"]),
        "successRate": rate(int(row["success_count"]), invocations),
        "avgLatencyMs": round(int(row["total_latency_ms"]) / invocations, 1) if invocations else 0.0,
        "minLatencyMs": min_ms,
        "maxLatencyMs": max_ms,
        "p50LatencyMs": estimate_percentile(counts, 0.50, min_ms, max_ms),
        "p95LatencyMs": estimate_percentile(counts, 0.95, min_ms, max_ms),
        "totalInputTokens": int(row["total_input_tokens"]),
        "totalOutputTokens": int(row["total_output_tokens"]),
        "estimatedCostUsd": float(round(cost, 6)),
    }


async def daily_usage(settings: Settings, agent_id: str, days: int, *, today: date | None = None) -> dict[str, Any]:
    """Return one agent's invocations and tokens per day for the last ``days`` days, newest first.

    The body of ``GET /api/analytics/agents/{agentId}/daily``. Every day of the window is listed,
    days without invocations with zeros. Days before ``dailyDataFrom`` have been rolled up into
    months (or precede all data), so their zeros are not real counts; ``dailyDataFrom`` is null when
    there is no usage data at all.
    """
    end = today or today_utc()
    start = end - timedelta(days=days - 1)
    pool = await get_pool(settings)
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_DAILY_USAGE, {"agent_id": agent_id, "start": start, "end": end})
        rows = await cur.fetchall()
        cur = await conn.execute(SELECT_DAILY_DATA_FROM)
        boundary = await cur.fetchone()

    by_day = {row["date"]: row for row in rows}
    usage = []
    for offset in range(days):
        day = end - timedelta(days=offset)
        row = by_day.get(day)
        usage.append(
            {
                "date": day.isoformat(),
                "count": int(row["invocation_count"]) if row else 0,
                "tokens": int(row["tokens"]) if row else 0,
            }
        )
    daily_data_from = boundary["daily_data_from"] if boundary else None
    return {
        "agentId": agent_id,
        "usage": usage,
        "dailyDataFrom": daily_data_from.isoformat() if daily_data_from else None,
    }
