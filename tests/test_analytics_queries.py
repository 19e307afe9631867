"""The analytics endpoints: input checks, the usage summary and one agent's days."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.analytics.histogram import BUCKET_COUNT, estimate_percentile
from shared.analytics.queries import daily_usage, parse_date_range, rate, require_agent_id, usage_summary
from shared.analytics.recorder import Invocation
from shared.analytics.writer import flush_usage
from shared.database import close_pool, get_pool
from shared.errors import BadRequest
from shared.settings import ModelPrice, Settings
from tests.apphost import bearer, call_function, response_json

TODAY = date(2026, 3, 15)


async def record(settings: Settings, invocations: list[Invocation]) -> None:
    pool = await get_pool(settings)
    assert await flush_usage(settings, pool, invocations)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (date(2026, 2, 14), TODAY)),
        ({"endDate": "2026-01-31"}, (date(2026, 1, 2), date(2026, 1, 31))),
        ({"startDate": "2026-03-01"}, (date(2026, 3, 1), TODAY)),
        ({"startDate": "2026-03-01", "endDate": "2026-03-01"}, (date(2026, 3, 1), date(2026, 3, 1))),
        ({"startDate": "2025-03-15", "endDate": "2026-03-15"}, (date(2025, 3, 15), date(2026, 3, 15))),
        ({"startDate": " 2026-03-01 ", "endDate": ""}, (date(2026, 3, 1), TODAY)),
    ],
)
def test_date_range_defaults_and_valid_forms(params: dict[str, str], expected: tuple[date, date]) -> None:
    assert parse_date_range(params, today=TODAY) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"startDate": "2026-13-01"}, "startDate must be a date in YYYY-MM-DD form, got '2026-13-01'"),
        ({"endDate": "2026-02-30"}, "endDate must be a date in YYYY-MM-DD form, got '2026-02-30'"),
        ({"startDate": "20260301"}, "startDate must be a date in YYYY-MM-DD form, got '20260301'"),
        ({"startDate": "yesterday"}, "startDate must be a date in YYYY-MM-DD form, got 'yesterday'"),
        ({"endDate": "2026-03-01T00:00"}, "endDate must be a date in YYYY-MM-DD form, got '2026-03-01T00:00'"),
        (
            {"startDate": "2026-03-02", "endDate": "2026-03-01"},
            "startDate must not be after endDate, got startDate 2026-03-02 and endDate 2026-03-01",
        ),
        (
            {"startDate": "2025-03-14", "endDate": "2026-03-15"},
            "startDate and endDate must span at most 366 days, got 367 days from 2025-03-14 to 2026-03-15",
        ),
    ],
)
def test_date_range_rejects_invalid_input(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_date_range(params, today=TODAY)

    assert raised.value.status == 400
    assert raised.value.detail == message


@pytest.mark.parametrize("agent_id", ["calculator", "a", "A-1_b.c", "x" * 64])
def test_agent_id_accepts_valid_ids(agent_id: str) -> None:
    assert require_agent_id(agent_id) == agent_id


@pytest.mark.parametrize("agent_id", ["", "x" * 65, "a/b", "a b", "agent%20x", "café", "a\n"])
def test_agent_id_rejects_invalid_ids(agent_id: str) -> None:
    with pytest.raises(BadRequest) as raised:
        require_agent_id(agent_id)

    assert raised.value.detail.startswith("agentId must be 1 to 64 letters, digits, '_', '-' or '.', got ")


def test_rate_is_zero_without_invocations() -> None:
    assert rate(0, 0) == 0.0
    assert rate(3, 4) == 0.75
    assert rate(2, 3) == 0.6667


def test_percentile_interpolates_inside_bucket() -> None:
    counts = [0] * BUCKET_COUNT
    counts[3] = 10  # 51 to 100 ms
    counts[5] = 10  # 251 to 500 ms

    assert estimate_percentile(counts, 0.5, 60, 400) == 100
    assert estimate_percentile(counts, 0.95, 60, 400) == 385
    assert estimate_percentile([0] * BUCKET_COUNT, 0.5, 0, 0) is None


async def test_summary_figures_per_agent(settings: Settings) -> None:
    # The configured model, 'offline', has no price here, so an unlisted model cannot fall back to one.
    priced = replace(settings, model_prices={"priced-model": ModelPrice(1.0, 2.0)})
    day = date(2026, 3, 10)
    invocations = [Invocation("supervisor", day, ms, True, 100, 10, "priced-model") for ms in (5, 15, 40, 90)]
    invocations += [
        Invocation("calculator", day, 30, True, 1_000, 500, "priced-model"),
        Invocation("calculator", day, 3_000, False, 0, 0, ""),
        Invocation("scheduler", day - timedelta(days=1), 20, True, 50, 5, "unlisted-model"),
    ]
    try:
        await record(priced, invocations)
        summary = await usage_summary(priced, date(2026, 3, 1), date(2026, 3, 31))
    finally:
        await close_pool()

    assert summary["startDate"] == "2026-03-01"
    assert summary["endDate"] == "2026-03-31"
    assert summary["coarseMonths"] == []
    assert summary["unpricedModels"] == ["unlisted-model"]
    assert [entry["agentId"] for entry in summary["summary"]] == ["supervisor", "calculator", "scheduler"]
    supervisor, calculator, scheduler = summary["summary"]
    assert supervisor == {
        "agentId": "supervisor",
        "invocationCount": 4,
        "successCount": 4,
        "errorCount": 0,
        "successRate": 1.0,
        "avgLatencyMs": 37.5,
        "minLatencyMs": 5,
        "maxLatencyMs": 90,
        "p50LatencyMs": 25,
        "p95LatencyMs": 82,
        "totalInputTokens": 400,
        "totalOutputTokens": 40,
        "estimatedCostUsd": 0.00048,
    }
    assert calculator["successRate"] == 0.5
    assert calculator["errorCount"] == 1
    assert calculator["estimatedCostUsd"] == 0.002
    assert calculator["maxLatencyMs"] == 3_000
    assert scheduler["estimatedCostUsd"] == 0.0


async def test_summary_splits_at_utc_midnight(settings: Settings) -> None:
    before_midnight = date(2026, 2, 28)
    after_midnight = date(2026, 3, 1)
    try:
        await record(
            settings,
            [
                Invocation("calculator", before_midnight, 10, True, 1, 1),
                Invocation("calculator", after_midnight, 10, True, 2, 2),
                Invocation("calculator", after_midnight, 10, True, 2, 2),
            ],
        )
        february = await usage_summary(settings, date(2026, 2, 1), before_midnight)
        march = await usage_summary(settings, after_midnight, date(2026, 3, 31))
        both = await usage_summary(settings, before_midnight, after_midnight)
    finally:
        await close_pool()

    assert february["summary"][0]["invocationCount"] == 1
    assert march["summary"][0]["invocationCount"] == 2
    assert both["summary"][0]["invocationCount"] == 3
    assert both["summary"][0]["totalInputTokens"] == 5


async def test_summary_of_empty_range_is_empty(settings: Settings) -> None:
    try:
        summary = await usage_summary(settings, date(2026, 1, 1), date(2026, 1, 31))
    finally:
        await close_pool()

    assert summary["summary"] == []
    assert summary["unpricedModels"] == []


async def test_daily_usage_lists_every_day_newest_first(settings: Settings) -> None:
    try:
        await record(
            settings,
            [
                Invocation("calculator", TODAY, 10, True, 7, 3),
                Invocation("calculator", TODAY, 10, False, 1, 0),
                Invocation("calculator", TODAY - timedelta(days=2), 10, True, 5, 5),
                Invocation("calculator", TODAY - timedelta(days=7), 10, True, 5, 5),
                Invocation("scheduler", TODAY, 10, True, 100, 100),
            ],
        )
        daily = await daily_usage(settings, "calculator", 5, today=TODAY)
        unknown = await daily_usage(settings, "nobody", 2, today=TODAY)
    finally:
        await close_pool()

    assert daily == {
        "agentId": "calculator",
        "usage": [
            {"date": "2026-03-15", "count": 2, "tokens": 11},
            {"date": "2026-03-14", "count": 0, "tokens": 0},
            {"date": "2026-03-13", "count": 1, "tokens": 10},
            {"date": "2026-03-12", "count": 0, "tokens": 0},
            {"date": "2026-03-11", "count": 0, "tokens": 0},
        ],
        "dailyDataFrom": "2026-03-08",
    }
    assert unknown["usage"] == [
        {"date": "2026-03-15", "count": 0, "tokens": 0},
        {"date": "2026-03-14", "count": 0, "tokens": 0},
    ]


async def test_daily_usage_without_any_data(settings: Settings) -> None:
    try:
        daily = await daily_usage(settings, "calculator", 1, today=TODAY)
    finally:
        await close_pool()

    assert daily == {
        "agentId": "calculator",
        "usage": [{"date": "2026-03-15", "count": 0, "tokens": 0}],
        "dailyDataFrom": None,
    }


async def get_summary(params: dict[str, str]) -> tuple[int, Any]:
    response = await call_function("agent_usage_summary", params=params, headers=bearer())
    return response.status_code, response_json(response)


async def get_daily(agent_id: str, params: dict[str, str]) -> tuple[int, Any]:
    response = await call_function(
        "agent_usage_daily", route_params={"agentId": agent_id}, params=params, headers=bearer()
    )
    return response.status_code, response_json(response)


@pytest.mark.usefixtures("app_environment")
async def test_summary_endpoint_returns_recorded_usage() -> None:
    from shared.settings import get_settings

    today = datetime.now(UTC).date()
    await record(get_settings(), [Invocation("calculator", today, 12, True, 3, 4, "offline")])

    status, body = await get_summary({})

    assert status == 200
    assert body["startDate"] == (today - timedelta(days=29)).isoformat()
    assert body["endDate"] == today.isoformat()
    assert body["summary"][0]["agentId"] == "calculator"
    assert body["summary"][0]["invocationCount"] == 1


@pytest.mark.usefixtures("app_environment")
@pytest.mark.parametrize(
    ("params", "detail_start"),
    [
        ({"startDate": "2026-13-01"}, "startDate must be a date in YYYY-MM-DD form"),
        ({"endDate": "soon"}, "endDate must be a date in YYYY-MM-DD form"),
        ({"startDate": "2026-03-02", "endDate": "2026-03-01"}, "startDate must not be after endDate"),
        ({"startDate": "2024-01-01", "endDate": "2026-01-01"}, "startDate and endDate must span at most 366 days"),
    ],
)
async def test_summary_endpoint_rejects_bad_dates(params: dict[str, str], detail_start: str) -> None:
    status, body = await get_summary(params)

    assert status == 400
    assert body["status"] == 400
    assert body["detail"].startswith(detail_start)


@pytest.mark.usefixtures("app_environment")
async def test_daily_endpoint_returns_window() -> None:
    status, body = await get_daily("calculator", {"days": "3"})

    assert status == 200
    assert body["agentId"] == "calculator"
    assert len(body["usage"]) == 3
    assert body["usage"][0]["date"] == datetime.now(UTC).date().isoformat()
    assert body["dailyDataFrom"] is None


@pytest.mark.usefixtures("app_environment")
@pytest.mark.parametrize(
    ("agent_id", "params", "detail_start"),
    [
        ("calculator", {"days": "0"}, "days must be an integer from 1 to 366"),
        ("calculator", {"days": "367"}, "days must be an integer from 1 to 366"),
        ("calculator", {"days": "abc"}, "days must be an integer from 1 to 366"),
        ("calculator", {"days": "1.5"}, "days must be an integer from 1 to 366"),
        ("a b", {}, "agentId must be 1 to 64 letters"),
        ("x" * 65, {}, "agentId must be 1 to 64 letters"),
    ],
)
async def test_daily_endpoint_rejects_bad_input(agent_id: str, params: dict[str, str], detail_start: str) -> None:
    status, body = await get_daily(agent_id, params)

    assert status == 400
    assert body["detail"].startswith(detail_start)


@pytest.mark.usefixtures("app_environment")
async def test_analytics_endpoints_need_analytics_role() -> None:
    response = await call_function("agent_usage_summary", headers=bearer(roles=[]))

    assert response.status_code == 403
