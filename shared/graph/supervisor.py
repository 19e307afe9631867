"""Build the supervisor graph: a supervisor that hands requests to a calculator and a scheduler agent."""

from __future__ import annotations

import warnings
from typing import Any

from langgraph.graph.state import CompiledStateGraph, StateGraph

from shared.graph.history import guard_model_input
from shared.graph.models import create_chat_model
from shared.graph.tools import CALCULATOR_TOOLS, SCHEDULER_TOOLS
from shared.settings import Settings

AGENT_NAMES = ("supervisor", "calculator", "scheduler")

SUPERVISOR_PROMPT = (
    "You are a supervisor of two agents. Hand arithmetic and unit conversions to 'calculator'; "
    "hand dates, times and meeting bookings to 'scheduler'. Give one request to one agent at a time. "
    "When the agents are done, answer the user briefly with their results. Do not do their work yourself."
)
CALCULATOR_PROMPT = (
    "You are the calculator. Use the calculate tool for arithmetic and convert_units for unit conversions. "
    "Answer with the result only."
)
SCHEDULER_PROMPT = (
    "You are the scheduler. Use current_time for the time in a zone, days_between to count days, and "
    "book_meeting to book meetings (a person approves each booking). Dates are YYYY-MM-DD."
)


def build_supervisor(settings: Settings) -> StateGraph[Any]:
    """Build the uncompiled supervisor graph with one chat model per agent."""
    # create_react_agent moved to langchain.agents in LangGraph 1.0, which langgraph-supervisor
    # does not use yet; the prebuilt one still works and its deprecation warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent
        from langgraph_supervisor import create_supervisor

        calculator = create_react_agent(
            create_chat_model(settings, "calculator"),
            CALCULATOR_TOOLS,
            name="calculator",
            prompt=CALCULATOR_PROMPT,
            pre_model_hook=guard_model_input,
        )
        scheduler = create_react_agent(
            create_chat_model(settings, "scheduler"),
            SCHEDULER_TOOLS,
            name="scheduler",
            prompt=SCHEDULER_PROMPT,
            pre_model_hook=guard_model_input,
        )
        return create_supervisor(
            [calculator, scheduler],
            model=create_chat_model(settings, "supervisor"),
            prompt=SUPERVISOR_PROMPT,
            supervisor_name="supervisor",
            output_mode="last_message",
            pre_model_hook=guard_model_input,
        )


def compile_supervisor(settings: Settings, checkpointer: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    return build_supervisor(settings).compile(checkpointer=checkpointer)
