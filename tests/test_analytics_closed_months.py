"""Closed months: the summary reads their totals and gives the same figures as from daily rows."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.analytics import rollup
from shared.analytics.queries import month_spans, usage_summary
from shared.analytics.recorder import Invocation
from shared.database import close_pool
from shared.maintenance import run_maintenance
from shared.settings import ModelPrice, Settings
from tests.test_maintenance_rollup import invocations_between, record

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
CLOSED_MONTHS = [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1)]

# Whole months, parts of months, ranges across closed and open months, and the current month.
RANGES = [
    (date(2026, 1, 1), date(2026, 6, 30)),
    (date(2026, 3, 1), date(2026, 3, 31)),
    (date(2026, 1, 15), date(2026, 5, 10)),
    (date(2026, 2, 1), date(2026, 4, 30)),
    (date(2026, 2, 28), date(2026, 3, 1)),
    (date(2026, 3, 2), date(2026, 3, 30)),
    (date(2026, 5, 1), date(2026, 6, 29)),
    (date(2025, 12, 1), date(2026, 1, 31)),
]

# Ranges that cover each month rolled up at NOW with 90 days of retention (January to March) whole
# or not at all, so rolling up changes none of their figures.
ROLLUP_RANGES = [
    (date(2026, 1, 1), date(2026, 6, 30)),
    (date(2026, 1, 1), date(2026, 5, 10)),
    (date(2026, 2, 1), date(2026, 4, 30)),
    (date(2026, 3, 1), date(2026, 3, 31)),
    (date(2026, 4, 1), date(2026, 5, 31)),
    (date(2026, 4, 2), date(2026, 5, 30)),
    (date(2026, 5, 1), date(2026, 6, 29)),
]


@pytest.fixture
def kept_daily(settings: Settings) -> Settings:
    """Settings that keep 400 days of daily rows, so the nightly job closes months and rolls up none."""
    return replace(settings, model_prices={"offline": ModelPrice(0.15, 0.6)}, analytics_daily_retention_days=400)


def closed_months(database_url: str) -> list[date]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT month FROM agent_usage_analytics_closed_months ORDER BY month").fetchall()
    return [row[0] for row in rows]


def month_totals(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM agent_usage_analytics_month_totals ORDER BY month, agent_id").fetchall()


def agent_entry(summary: dict[str, Any], agent_id: str) -> dict[str, Any]:
    return next(entry for entry in summary["summary"] if entry["agentId"] == agent_id)


def test_month_spans_cut_range_at_month_boundaries() -> None:
    spans = month_spans(date(2026, 1, 15), date(2026, 3, 31))

    assert spans["months"] == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
    assert spans["first_days"] == [date(2026, 1, 15), date(2026, 2, 1), date(2026, 3, 1)]
    assert spans["last_days"] == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]
    assert spans["whole"] == [False, True, True]


def test_month_spans_of_one_day_and_leap_february() -> None:
    assert month_spans(date(2028, 2, 29), date(2028, 2, 29)) == {
        "months": [date(2028, 2, 1)],
        "first_days": [date(2028, 2, 29)],
        "last_days": [date(2028, 2, 29)],
        "whole": [False],
    }
    assert month_spans(date(2028, 2, 1), date(2028, 2, 29))["whole"] == [True]
    assert month_spans(date(2025, 12, 1), date(2026, 1, 31))["months"] == [date(2025, 12, 1), date(2026, 1, 1)]


async def test_summary_is_unchanged_by_closing_months(kept_daily: Settings, database_url: str) -> None:
    try:
        await record(kept_daily, invocations_between(date(2026, 1, 1), date(2026, 6, 29)))
        before = [await usage_summary(kept_daily, start, end) for start, end in RANGES]
        summary = await run_maintenance(kept_daily, now=NOW)
        after = [await usage_summary(kept_daily, start, end) for start, end in RANGES]
    finally:
        await close_pool()

    assert summary.months_rolled_up == 0
    assert summary.months_closed == 5
    assert "closed 5 months of daily usage" in summary.describe()
    assert closed_months(database_url) == CLOSED_MONTHS
    assert {row["month"] for row in month_totals(database_url)} == set(CLOSED_MONTHS)
    assert before[0]["summary"] != []
    for expected, actual in zip(before, after, strict=True):
        assert actual == expected


async def test_second_run_closes_nothing_more(kept_daily: Settings, database_url: str) -> None:
    try:
        await record(kept_daily, invocations_between(date(2026, 4, 1), date(2026, 6, 29)))
        await run_maintenance(kept_daily, now=NOW)
        totals_once = month_totals(database_url)
        second = await run_maintenance(kept_daily, now=NOW)
    finally:
        await close_pool()

    assert second.months_closed == 0
    assert month_totals(database_url) == totals_once


async def test_late_write_reopens_closed_month(kept_daily: Settings, database_url: str) -> None:
    late = [
        Invocation(
            "calculator", date(2026, 3, 31), latency_ms=90_000, succeeded=False, input_tokens=7, model_name="offline"
        ),
        Invocation("late-agent", date(2026, 3, 31), latency_ms=5, succeeded=True, input_tokens=3, model_name="offline"),
    ]
    march = (date(2026, 3, 1), date(2026, 3, 31))
    try:
        await record(kept_daily, invocations_between(date(2026, 1, 1), date(2026, 6, 29)))
        await run_maintenance(kept_daily, now=NOW)
        before = await usage_summary(kept_daily, *march)
        await record(kept_daily, late)
        reopened = closed_months(database_url)
        after_late_write = await usage_summary(kept_daily, *march)
        spanning = await usage_summary(kept_daily, date(2026, 1, 1), date(2026, 6, 30))
        rerun = await run_maintenance(kept_daily, now=NOW)
        after_rerun = await usage_summary(kept_daily, *march)
        spanning_after_rerun = await usage_summary(kept_daily, date(2026, 1, 1), date(2026, 6, 30))
    finally:
        await close_pool()

    calculator_before = agent_entry(before, "calculator")
    calculator_after = agent_entry(after_late_write, "calculator")
    assert date(2026, 3, 1) not in reopened
    assert reopened == [m for m in CLOSED_MONTHS if m != date(2026, 3, 1)]
    assert calculator_after["invocationCount"] == calculator_before["invocationCount"] + 1
    assert calculator_after["errorCount"] == calculator_before["errorCount"] + 1
    assert calculator_after["totalInputTokens"] == calculator_before["totalInputTokens"] + 7
    assert calculator_after["maxLatencyMs"] == 90_000
    assert agent_entry(after_late_write, "late-agent")["invocationCount"] == 1
    assert agent_entry(spanning, "late-agent")["invocationCount"] == 1
    assert rerun.months_closed == 1
    assert closed_months(database_url) == CLOSED_MONTHS
    assert after_rerun == after_late_write
    assert spanning_after_rerun == spanning


async def test_rollup_deletes_totals_of_rolled_up_months(kept_daily: Settings, database_url: str) -> None:
    default_retention = replace(kept_daily, analytics_daily_retention_days=90)
    try:
        await record(kept_daily, invocations_between(date(2026, 1, 1), date(2026, 6, 29)))
        before = [await usage_summary(kept_daily, start, end) for start, end in ROLLUP_RANGES]
        await run_maintenance(kept_daily, now=NOW)
        rolled = await run_maintenance(default_retention, now=NOW)
        after = [await usage_summary(kept_daily, start, end) for start, end in ROLLUP_RANGES]
    finally:
        await close_pool()

    # 90 days before 2026-06-30 is 2026-04-01, so January to March move into monthly rows.
    assert rolled.months_rolled_up == 3
    assert closed_months(database_url) == [date(2026, 4, 1), date(2026, 5, 1)]
    assert {row["month"] for row in month_totals(database_url)} == {date(2026, 4, 1), date(2026, 5, 1)}
    for expected, actual in zip(before, after, strict=True):
        assert actual == expected


async def test_write_waits_while_month_is_closed(kept_daily: Settings, database_url: str) -> None:
    """A write that arrives while a month's totals are summed waits, then reopens the month."""
    params = {"month": date(2026, 5, 1), "next_month": date(2026, 6, 1)}
    late = [
        Invocation("scheduler", date(2026, 5, 31), latency_ms=40, succeeded=True, input_tokens=11, model_name="offline")
    ]
    may = (date(2026, 5, 1), date(2026, 5, 31))
    try:
        await record(kept_daily, invocations_between(date(2026, 5, 1), date(2026, 5, 31)))
        before = await usage_summary(kept_daily, *may)
        async with await psycopg.AsyncConnection.connect(database_url) as closer:
            async with closer.transaction():
                await closer.execute(rollup.LOCK_DAILY_USAGE_AGAINST_WRITES)
                await closer.execute(rollup.INSERT_CLOSED_MONTH, params)
                await closer.execute(rollup.INSERT_MONTH_TOTALS, params)
                write = asyncio.create_task(record(kept_daily, late))
                await asyncio.sleep(0.3)
                waited = not write.done()
            await write
        after = await usage_summary(kept_daily, *may)
    finally:
        await close_pool()

    assert waited
    assert closed_months(database_url) == []
    assert agent_entry(after, "scheduler")["invocationCount"] == agent_entry(before, "scheduler")["invocationCount"] + 1
    assert (
        agent_entry(after, "scheduler")["totalInputTokens"] == agent_entry(before, "scheduler")["totalInputTokens"] + 11
    )


async def test_month_stays_open_when_table_lock_times_out(
    kept_daily: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        await record(kept_daily, invocations_between(date(2026, 4, 1), date(2026, 5, 31)))
        expected = await usage_summary(kept_daily, date(2026, 4, 1), date(2026, 5, 31))
        async with await psycopg.AsyncConnection.connect(database_url) as writer:
            async with writer.transaction():
                # An open write transaction holds ROW EXCLUSIVE on the daily table until it ends.
                await writer.execute("UPDATE agent_usage_analytics SET updated_at = now() WHERE false")
                with caplog.at_level(logging.WARNING, logger="shared.analytics.rollup"):
                    blocked = await run_maintenance(kept_daily, now=NOW)
        actual = await usage_summary(kept_daily, date(2026, 4, 1), date(2026, 5, 31))
        retry = await run_maintenance(kept_daily, now=NOW)
    finally:
        await close_pool()

    assert blocked.months_closed == 0
    assert any(r.getMessage().startswith("left 2026-04 open: no lock on the daily usage table") for r in caplog.records)
    assert actual == expected
    assert retry.months_closed == 2
    assert closed_months(database_url) == [date(2026, 4, 1), date(2026, 5, 1)]
