"""LangGraph's published conformance suite, run on the checkpointer exactly as the app configures it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from shared.database import apply_schema, create_pool
from shared.settings import Settings


async def test_app_checkpointer_passes_conformance_suite(settings: Settings) -> None:
    pool = create_pool(settings)
    await pool.open()
    await apply_schema(pool)

    @checkpointer_test(name="AsyncPostgresSaver on the app's pool")
    async def app_saver() -> AsyncIterator[AsyncPostgresSaver]:
        yield AsyncPostgresSaver(pool)

    try:
        report = await validate(app_saver)
    finally:
        await pool.close()

    report.print_report()
    assert report.passed_all_base()
