"""Build the supervisor graph: a supervisor that hands requests to a calculator and a scheduler agent.

The conversation lives in the ``messages`` channel of ``SupervisorState``, a LangGraph
``DeltaChannel`` (beta in langgraph 1.2): a checkpoint stores only the messages that its steps
added, and the saver rebuilds the list by replaying them from the latest full snapshot, written
every ``MESSAGES_SNAPSHOT_FREQUENCY`` updates. With a plain reducer channel every checkpoint holds
the whole list again, so the bytes written per turn grow with the conversation.

Two changes to langgraph-supervisor's graph keep those writes small, because a delta is whatever
a node returns: the handoff tools return only the supervisor's call and its tool result, not the
whole list, and the supervisor node returns only the messages its run added. The supervisor agent
runs without a checkpointer of its own: it never interrupts, so its state (which holds the whole
list more than once) need not be saved. The workers keep theirs, so a scheduler approval resumes.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import _messages_delta_reducer
from langgraph.graph.state import CompiledStateGraph, StateGraph
from langgraph.managed import RemainingSteps
from langgraph.prebuilt import InjectedState
from langgraph.types import Command, Send
from langgraph_supervisor.handoff import METADATA_KEY_HANDOFF_DESTINATION

from shared.graph.history import guard_model_input
from shared.graph.models import create_chat_model
from shared.graph.tools import CALCULATOR_TOOLS, SCHEDULER_TOOLS
from shared.settings import Settings

AGENT_NAMES = ("supervisor", "calculator", "scheduler")
WORKER_NAMES = ("calculator", "scheduler")

# A turn makes about four updates to ``messages`` (input, handoff, worker answer, summary), so a
# full snapshot is written about every 250 turns. Replaying a thread reads the writes since the
# latest snapshot; a snapshot rewrites the whole list. Fewer snapshots mean fewer bytes written
# per turn on long threads and longer replays: bench/long_conversations.py measures both.
MESSAGES_SNAPSHOT_FREQUENCY = 1000


class SupervisorState(TypedDict):
    """State of the supervisor workflow and of the supervisor agent."""

    messages: Annotated[
        list[AnyMessage], DeltaChannel(_messages_delta_reducer, snapshot_frequency=MESSAGES_SNAPSHOT_FREQUENCY)
    ]
    remaining_steps: NotRequired[RemainingSteps]


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
        builder: StateGraph[Any] = create_supervisor(
            [calculator, scheduler],
            model=create_chat_model(settings, "supervisor"),
            tools=[create_handoff_tool(name) for name in WORKER_NAMES],
            prompt=SUPERVISOR_PROMPT,
            supervisor_name="supervisor",
            output_mode="last_message",
            pre_model_hook=guard_model_input,
            state_schema=SupervisorState,
        )
    _return_only_new_messages(builder, "supervisor")
    return builder


def compile_supervisor(settings: Settings, checkpointer: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the supervisor graph with ``checkpointer`` (None: each request sets its own)."""
    return build_supervisor(settings).compile(checkpointer=checkpointer)


def create_handoff_tool(agent_name: str) -> BaseTool:
    """Create the supervisor's ``transfer_to_<agent_name>`` tool, which hands the request to that agent.

    It behaves like langgraph-supervisor's own handoff tool, except that a single handoff writes
    only the supervisor's call and the tool's result to the workflow: the workflow's ``messages``
    already holds the rest, and a delta channel stores whatever is written.
    """
    name = f"transfer_to_{agent_name}"

    @tool(name, description=f"Ask agent '{agent_name}' for help")
    def handoff_to_agent(
        state: Annotated[dict[str, Any], InjectedState],
        tool_call_id: Annotated[str, InjectedToolCallId],
    ) -> Command[Any]:
        result = ToolMessage(
            content=f"Successfully transferred to {agent_name}",
            name=name,
            tool_call_id=tool_call_id,
            response_metadata={METADATA_KEY_HANDOFF_DESTINATION: agent_name},
        )
        call = state["messages"][-1]
        if isinstance(call, AIMessage) and len(call.tool_calls) > 1:
            # Parallel handoffs: each agent gets the history with only its own call, as a Send, the
            # way langgraph-supervisor does it; the workflow's messages get only the agents' answers.
            own_call = call.model_copy(update={"tool_calls": [c for c in call.tool_calls if c["id"] == tool_call_id]})
            history = [*state["messages"][:-1], own_call, result]
            return Command(graph=Command.PARENT, goto=[Send(agent_name, {**state, "messages": history})])
        return Command(graph=Command.PARENT, goto=agent_name, update={"messages": [call, result]})

    handoff_to_agent.metadata = {METADATA_KEY_HANDOFF_DESTINATION: agent_name}
    return handoff_to_agent


def _return_only_new_messages(builder: StateGraph[Any], node: str) -> None:
    """Make the compiled agent at ``node`` run without a checkpointer and return only the messages it added.

    A compiled graph used as a node returns its whole final state, so the workflow would receive
    and store the whole message list at every supervisor step.
    """
    spec = builder.nodes[node]
    if not isinstance(spec.runnable, CompiledStateGraph):
        raise TypeError(f"node {node!r} must be a compiled graph, got {type(spec.runnable).__name__}")
    agent = spec.runnable.copy(update={"checkpointer": False})

    def added_messages(state: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        known = {m.id for m in state["messages"]}
        return {"messages": [m for m in output["messages"] if m.id not in known]}

    # NOTE: without a checkpointer the agent must run in "exit" mode whatever the workflow's mode:
    # in "async" mode langgraph 1.2.24 awaits a checkpoint save that was never started. LangGraph
    # then warns that durability has no effect, which is the point, so that warning is silenced.
    warnings.filterwarnings("ignore", message="`durability` has no effect when no checkpointer", category=UserWarning)

    def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return added_messages(state, agent.invoke({"messages": state["messages"]}, config, durability="exit"))

    async def arun(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        output = await agent.ainvoke({"messages": state["messages"]}, config, durability="exit")
        return added_messages(state, output)

    builder.nodes[node] = dataclasses.replace(spec, runnable=RunnableLambda(run, arun, name=node))
