"""The nightly usage rollup: whole months, exact totals, retention boundaries in UTC, one run at a time."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from azure.functions.timer import TimerRequest
from psycopg.rows import dict_row

from shared.analytics.queries import daily_usage, usage_summary
from shared.analytics.recorder import Invocation
from shared.analytics.rollup import add_months, oldest_kept_month, rollup_boundary
from shared.analytics.writer import flush_usage
from shared.database import close_pool, get_pool
from shared.maintenance import run_maintenance
from shared.settings import ModelPrice, Settings
from tests.apphost import registered_functions

# Midday, so that the UTC date is the same whatever the local time zone of the test machine.
NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
AGENTS = ("supervisor", "calculator", "scheduler")


@pytest.fixture
def priced(settings: Settings) -> Settings:
    return replace(settings, model_prices={"offline": ModelPrice(0.15, 0.6)})


def invocations_between(first: date, last: date, seed: int = 1) -> list[Invocation]:
    """Make a few invocations per agent and day, with varied latencies, tokens and outcomes."""
    rng = random.Random(seed)
    invocations = []
    day = first
    while day <= last:
        for agent in AGENTS:
            for _ in range(rng.randint(0, 3)):
                model = "offline" if rng.random() < 0.9 else "unpriced-model"
                invocations.append(
                    Invocation(
                        agent,
                        day,
                        latency_ms=rng.choice([3, 40, 300, 2_000, 70_000]),
                        succeeded=rng.random() < 0.8,
                        input_tokens=rng.randint(0, 5_000),
                        output_tokens=rng.randint(0, 500),
                        model_name=model,
                    )
                )
        day += timedelta(days=1)
    return invocations


async def record(settings: Settings, invocations: list[Invocation]) -> None:
    pool = await get_pool(settings)
    assert await flush_usage(settings, pool, invocations)


def table_rows(database_url: str, table: str) -> list[dict[str, Any]]:
    order = "date" if table == "agent_usage_analytics" else "month"
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY {order}, agent_id").fetchall()  # noqa: S608
    for row in rows:
        for volatile in ("id", "created_at", "updated_at"):
            row.pop(volatile)
    return rows


WHOLE_MONTH_RANGES = [
    (date(2025, 11, 1), date(2026, 3, 31)),
    (date(2026, 1, 1), date(2026, 1, 31)),
    (date(2025, 12, 1), date(2026, 5, 31)),
    (date(2025, 11, 1), date(2026, 6, 30)),
    (date(2026, 4, 1), date(2026, 6, 30)),
]


async def test_summary_of_whole_months_is_unchanged_by_rollup(priced: Settings, database_url: str) -> None:
    try:
        await record(priced, invocations_between(date(2025, 11, 1), date(2026, 6, 29)))
        before = [await usage_summary(priced, start, end) for start, end in WHOLE_MONTH_RANGES]
        summary = await run_maintenance(priced, now=NOW)
        after = [await usage_summary(priced, start, end) for start, end in WHOLE_MONTH_RANGES]
    finally:
        await close_pool()

    monthly = table_rows(database_url, "agent_usage_analytics_monthly")
    daily = table_rows(database_url, "agent_usage_analytics")
    assert summary.skipped is False
    assert summary.months_rolled_up == 5
    assert summary.monthly_rows_written == len(monthly)
    rolled_up_months = [date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
    assert sorted({row["month"] for row in monthly}) == rolled_up_months
    assert min(row["date"] for row in daily) >= date(2026, 4, 1)
    assert before[0]["summary"] != []
    for expected, actual in zip(before, after, strict=True):
        assert actual == expected


async def test_partly_covered_month_counts_whole_and_is_listed(priced: Settings) -> None:
    try:
        await record(priced, invocations_between(date(2026, 1, 1), date(2026, 2, 28)))
        january_and_february = await usage_summary(priced, date(2026, 1, 1), date(2026, 2, 28))
        await run_maintenance(priced, now=NOW)
        partial = await usage_summary(priced, date(2026, 1, 15), date(2026, 2, 10))
        daily = await daily_usage(priced, "calculator", 5, today=NOW.date())
    finally:
        await close_pool()

    assert partial["coarseMonths"] == ["2026-01", "2026-02"]
    assert partial["summary"] == january_and_february["summary"]
    assert partial["startDate"] == "2026-01-15"
    assert daily["dailyDataFrom"] == "2026-03-01"


async def test_second_run_changes_nothing(priced: Settings, database_url: str) -> None:
    try:
        await record(priced, invocations_between(date(2025, 12, 1), date(2026, 6, 29)))
        await run_maintenance(priced, now=NOW)
        monthly_once = table_rows(database_url, "agent_usage_analytics_monthly")
        daily_once = table_rows(database_url, "agent_usage_analytics")
        second = await run_maintenance(priced, now=NOW)
    finally:
        await close_pool()

    assert second.months_rolled_up == 0
    assert second.daily_rows_rolled_up == 0
    assert table_rows(database_url, "agent_usage_analytics_monthly") == monthly_once
    assert table_rows(database_url, "agent_usage_analytics") == daily_once


async def test_overlapping_run_is_skipped(
    priced: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    second_done = asyncio.Event()
    summaries: list[Any] = []

    async def run_second_while_first_holds_lock(month: date) -> None:
        if not second_done.is_set():
            summaries.append(await run_maintenance(priced, now=NOW))
            second_done.set()

    try:
        await record(priced, invocations_between(date(2026, 1, 1), date(2026, 4, 30)))
        with caplog.at_level(logging.WARNING, logger="shared.maintenance"):
            first = await run_maintenance(priced, now=NOW, before_daily_delete=run_second_while_first_holds_lock)
    finally:
        await close_pool()

    assert len(summaries) == 1
    assert summaries[0].skipped is True
    assert summaries[0].describe().startswith("skipped: another maintenance run holds the lock")
    assert any("skipped" in r.getMessage() for r in caplog.records)
    assert first.skipped is False
    assert first.months_rolled_up == 3
    assert {row["month"] for row in table_rows(database_url, "agent_usage_analytics_monthly")} == {
        date(2026, 1, 1),
        date(2026, 2, 1),
        date(2026, 3, 1),
    }


async def test_concurrent_runs_give_same_result_as_one(priced: Settings, database_url: str) -> None:
    try:
        await record(priced, invocations_between(date(2025, 10, 1), date(2026, 6, 29)))
        expected = await usage_summary(priced, date(2025, 10, 1), date(2026, 6, 30))
        results = await asyncio.gather(*(run_maintenance(priced, now=NOW) for _ in range(3)))
        actual = await usage_summary(priced, date(2025, 10, 1), date(2026, 6, 30))
    finally:
        await close_pool()

    assert sum(r.months_rolled_up for r in results) == 6
    assert actual == expected
    assert len({row["month"] for row in table_rows(database_url, "agent_usage_analytics_monthly")}) == 6


class InjectedCrash(RuntimeError):
    pass


async def test_crash_between_upsert_and_delete_loses_nothing(priced: Settings, database_url: str) -> None:
    async def crash_in_february(month: date) -> None:
        if month == date(2026, 2, 1):
            raise InjectedCrash("crash after the monthly upsert of 2026-02")

    whole_range = (date(2026, 1, 1), date(2026, 6, 30))
    try:
        await record(priced, invocations_between(date(2026, 1, 1), date(2026, 6, 29)))
        expected = await usage_summary(priced, *whole_range)
        with pytest.raises(InjectedCrash):
            await run_maintenance(priced, now=NOW, before_daily_delete=crash_in_february)
        after_crash = await usage_summary(priced, *whole_range)
        months_after_crash = {row["month"] for row in table_rows(database_url, "agent_usage_analytics_monthly")}
        february_days = await usage_summary(priced, date(2026, 2, 1), date(2026, 2, 28))
        retry = await run_maintenance(priced, now=NOW)
        after_retry = await usage_summary(priced, *whole_range)
    finally:
        await close_pool()

    assert after_crash == expected
    assert months_after_crash == {date(2026, 1, 1)}
    assert february_days["coarseMonths"] == []
    assert february_days["summary"] != []
    assert retry.months_rolled_up == 2
    assert after_retry == expected


@pytest.mark.parametrize(
    ("today", "march_rolled_up"),
    [
        # 2026-03-31 is 91 days before 2026-06-30, past 90 days of retention: March moves.
        (date(2026, 6, 30), True),
        # 2026-03-31 is 90 days before 2026-06-29, still kept: March stays daily.
        (date(2026, 6, 29), False),
    ],
)
async def test_daily_retention_boundary_is_exact(
    priced: Settings, database_url: str, today: date, march_rolled_up: bool
) -> None:
    now = datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=23, minutes=59)
    try:
        await record(
            priced,
            [
                Invocation("calculator", date(2026, 3, 31), 10, True, 1, 1),
                Invocation("calculator", date(2026, 4, 1), 10, True, 1, 1),
            ],
        )
        summary = await run_maintenance(priced, now=now)
    finally:
        await close_pool()

    daily_dates = {row["date"] for row in table_rows(database_url, "agent_usage_analytics")}
    months = {row["month"] for row in table_rows(database_url, "agent_usage_analytics_monthly")}
    assert (date(2026, 3, 1) in months) is march_rolled_up
    assert (date(2026, 3, 31) in daily_dates) is not march_rolled_up
    assert date(2026, 4, 1) in daily_dates
    assert summary.months_rolled_up == (1 if march_rolled_up else 0)


async def test_monthly_retention_boundary_is_exact(priced: Settings, database_url: str) -> None:
    try:
        await record(
            priced,
            [
                Invocation("calculator", date(2023, 6, 30), 10, True, 1, 1),
                Invocation("scheduler", date(2023, 6, 1), 10, True, 1, 1),
                Invocation("calculator", date(2023, 7, 1), 10, True, 1, 1),
            ],
        )
        summary = await run_maintenance(priced, now=NOW)
    finally:
        await close_pool()

    months = [(row["month"], row["agent_id"]) for row in table_rows(database_url, "agent_usage_analytics_monthly")]
    assert months == [(date(2023, 7, 1), "calculator")]
    assert summary.monthly_rows_deleted == 2
    assert table_rows(database_url, "agent_usage_analytics") == []


def test_boundary_helpers() -> None:
    assert rollup_boundary(date(2026, 6, 30), 90) == date(2026, 4, 1)
    assert rollup_boundary(date(2026, 6, 29), 90) == date(2026, 3, 1)
    assert rollup_boundary(date(2026, 3, 1), 1) == date(2026, 2, 1)
    assert oldest_kept_month(date(2026, 6, 30), 36) == date(2023, 7, 1)
    assert oldest_kept_month(date(2026, 1, 31), 1) == date(2026, 1, 1)
    assert add_months(date(2026, 1, 1), -13) == date(2024, 12, 1)
    assert add_months(date(2026, 12, 1), 1) == date(2027, 1, 1)


async def test_describe_reports_each_count(priced: Settings) -> None:
    invocations = invocations_between(date(2026, 1, 1), date(2026, 1, 31))
    try:
        await record(priced, invocations)
        summary = await run_maintenance(priced, now=NOW)
    finally:
        await close_pool()

    text = summary.describe()
    assert summary.daily_rows_rolled_up == len({(i.day, i.agent_id) for i in invocations})
    assert summary.monthly_rows_written == 3
    assert text.startswith(f"rolled up {summary.daily_rows_rolled_up} daily usage rows of 1 months into 3 monthly rows")
    assert "deleted 0 expired monthly rows, deleted 0 idle threads, compacted 0 threads" in text


@pytest.mark.usefixtures("app_environment")
async def test_timer_function_logs_summary(caplog: pytest.LogCaptureFixture) -> None:
    timer_function = registered_functions()["nightly_maintenance"].get_user_function()

    with caplog.at_level(logging.INFO, logger="function_app"):
        await timer_function(TimerRequest(past_due=True))

    messages = [r.getMessage() for r in caplog.records if r.name == "function_app"]
    assert "nightly maintenance is running past its scheduled time" in messages
    assert any(m.startswith("nightly maintenance: rolled up 0 daily usage rows") for m in messages)
