"""The LangGraph adapter in-process (real langgraph and langchain-core, no Redis): how LangGraph's stream maps to
runcast events, history, node changes and handoffs, usage, cancel, errors, and the `langgraph` extra being optional."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import interrupt

from runcast.worker.adapters import from_langgraph
from runcast.worker.adapters.langgraph import LangGraphAgent
from runcast.worker.agents import default_registry, load_registry
from runcast.worker.providers.base import Message
from runcast.worker.runnable import RunRequest
from tests.support import langgraph_agents
from tests.support.adapter_checks import cancel_after_chunks, collect, data, kinds, message_without, text_of
from tests.support.langgraph_agents import HANDOFF_TOOL, ScriptedChatModel, build_graph, lookup_order
from tests.support.scripted_model import (
    DELTAS,
    FINAL_OUTPUT,
    FIRST_AGENT,
    HANDOFF_REASON,
    SECOND_AGENT,
    STOPPED_LOCALLY,
    TOOL_OUTPUT,
    USAGE,
    prompt,
)


def node(model: Any) -> Any:
    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    return call_model


async def test_a_streamed_graph_maps_to_runcast_events_one_chunk_per_delta():
    events = await collect(from_langgraph(build_graph()), prompt(), run_id="run-lg-1")
    assert kinds(events) == [
        "start", "tool_call", "tool_result", "tool_call", "tool_result", "agent_switch",
        *["chunk"] * len(DELTAS), "metadata", "complete",
    ]  # fmt: skip
    assert all(event.run_id == "run-lg-1" for event in events)
    assert data(events[0])["agent_name"] == FIRST_AGENT  # the graph's entry node
    assert data(events[1]) == {"tool_name": "lookup_order", "arguments": {"order_id": "A-42"}, "call_id": "call_tool",
                               "status": "started"}  # fmt: skip
    assert data(events[2])["result"] == TOOL_OUTPUT and data(events[2])["status"] == "completed"
    assert data(events[2])["call_id"] == "call_tool" and data(events[2])["execution_time_ms"] is not None
    assert data(events[3])["tool_name"] == HANDOFF_TOOL and data(events[4])["result"] == HANDOFF_REASON
    assert data(events[5]) == {"from_agent": FIRST_AGENT, "to_agent": SECOND_AGENT, "reason": HANDOFF_REASON}
    chunks = [data(e) for e in events if e.type.value == "chunk"]
    assert [c["delta"] for c in chunks] == DELTAS
    assert [c["token_count"] for c in chunks] == list(range(1, len(DELTAS) + 1))
    assert chunks[-1]["content"] == FINAL_OUTPUT == await langgraph_agents.direct_output(prompt())
    metadata = data(events[-2])
    assert metadata["agent_name"] == SECOND_AGENT and metadata["turn_count"] == 3
    assert metadata["model_name"] == langgraph_agents.MODEL  # the chat model's own (ls_model_name)
    assert metadata["total_tokens"] == 3 * USAGE["total_tokens"]  # usage_metadata of every model call
    assert data(events[-1]) == {"content": FINAL_OUTPUT}


async def test_a_model_that_does_not_stream_publishes_its_message_as_one_chunk_with_its_usage():
    whole = ScriptedChatModel(agent_name=SECOND_AGENT, disable_streaming=True)
    events = await collect(from_langgraph(build_graph(support_model=whole)), prompt())
    assert kinds(events)[-4:] == ["agent_switch", "chunk", "metadata", "complete"]
    assert data(events[-3])["delta"] == FINAL_OUTPUT == data(events[-1])["content"]
    assert data(events[-2])["total_tokens"] == 3 * USAGE["total_tokens"]


@pytest.mark.parametrize("subgraphs", [True, False])
async def test_a_change_of_the_node_that_speaks_is_an_agent_switch(subgraphs: bool):
    """A flat graph: no handoff tool, an edge takes the run from the triage node (via its ToolNode) to support."""
    graph = StateGraph(MessagesState)
    graph.add_node(FIRST_AGENT, node(ScriptedChatModel(agent_name=FIRST_AGENT).bind_tools([lookup_order])))
    graph.add_node("tools", ToolNode([lookup_order]))
    graph.add_node(SECOND_AGENT, node(ScriptedChatModel(agent_name=SECOND_AGENT)))
    graph.add_edge(START, FIRST_AGENT)
    graph.add_conditional_edges(FIRST_AGENT, tools_condition)
    graph.add_edge("tools", SECOND_AGENT)
    graph.add_edge(SECOND_AGENT, END)
    events = await collect(from_langgraph(graph.compile(), subgraphs=subgraphs), prompt())
    assert kinds(events)[:5] == ["start", "tool_call", "tool_result", "agent_switch", "chunk"]
    assert data(events[3]) == {"from_agent": FIRST_AGENT, "to_agent": SECOND_AGENT, "reason": ""}
    assert text_of(events) == FINAL_OUTPUT


async def test_the_conversation_history_reaches_the_graph_before_the_input():
    triage = ScriptedChatModel(agent_name=FIRST_AGENT)
    history = [
        Message("user", "my first question"),
        Message("assistant", "", tool_calls=[
            {"id": "c0", "type": "function", "function": {"name": "lookup_order", "arguments": '{"order_id": "B-1"}'}},
        ]),
        Message("tool", "earlier result", tool_call_id="c0", name="lookup_order"),
        Message("assistant", "an earlier answer"),
    ]  # fmt: skip
    await collect(from_langgraph(build_graph(triage_model=triage)), prompt(), history=history)
    first_call = triage.seen[0]
    assert isinstance(first_call[0], SystemMessage)  # the triage node's own prompt
    assert [(type(m), m.content) for m in first_call[1:]] == [
        (HumanMessage, "my first question"), (AIMessage, ""), (ToolMessage, "earlier result"),
        (AIMessage, "an earlier answer"), (HumanMessage, prompt()),
    ]  # fmt: skip
    assert first_call[2].tool_calls == [{"name": "lookup_order", "args": {"order_id": "B-1"}, "id": "c0",
                                         "type": "tool_call"}]  # fmt: skip
    assert first_call[3].tool_call_id == "c0"


async def test_historys_tool_calls_are_not_published_again_when_a_sub_graph_returns_its_whole_state():
    """A sub-graph that ends normally hands its whole state (history included) to its parent as its update."""
    agent = ScriptedChatModel(agent_name=FIRST_AGENT, handoffs=False).bind_tools([lookup_order])
    inner = StateGraph(MessagesState)
    inner.add_node("agent", node(agent))
    inner.add_node("tools", ToolNode([lookup_order]))
    inner.add_edge(START, "agent")
    inner.add_conditional_edges("agent", tools_condition)
    inner.add_edge("tools", "agent")
    outer = StateGraph(MessagesState)
    outer.add_node(FIRST_AGENT, inner.compile())
    outer.add_edge(START, FIRST_AGENT)
    history = [
        Message("user", "earlier"),
        Message("assistant", "", tool_calls=[{"id": "old", "type": "function",
                                              "function": {"name": "lookup_order", "arguments": "not json"}}]),
        Message("tool", "old result", tool_call_id="old"),
    ]  # fmt: skip
    events = await collect(from_langgraph(outer.compile()), prompt(), history=history)
    assert "tool_call" not in kinds(events) and "tool_result" not in kinds(events)
    assert "agent_switch" not in kinds(events)  # the sub-graph's node is the agent that speaks
    assert kinds(events)[-1] == "complete" and text_of(events) == FINAL_OUTPUT


async def test_a_failed_tool_is_a_failed_tool_result():
    @tool("lookup_order")
    def broken_lookup(order_id: str) -> str:
        """Look an order up by id."""
        raise ValueError(f"the order database is down ({order_id})")

    graph = StateGraph(MessagesState)
    graph.add_node("agent", node(ScriptedChatModel(agent_name=FIRST_AGENT, handoffs=False).bind_tools([broken_lookup])))
    graph.add_node("tools", ToolNode([broken_lookup], handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    events = await collect(from_langgraph(graph.compile()), prompt())
    result = data(events[kinds(events).index("tool_result")])
    assert result["status"] == "failed" and "the order database is down (A-42)" in result["result"]
    assert data(events[0])["agent_name"] == "agent" and "agent_switch" not in kinds(events)
    assert kinds(events)[-1] == "complete" and text_of(events) == FINAL_OUTPUT


async def test_cancelling_the_task_that_iterates_the_stream_cancels_the_graphs_run_and_its_model_stream():
    """The worker stops a cancelled run by cancelling the task that iterates the agent's events."""
    await cancel_after_chunks(from_langgraph(build_graph()))


async def test_closing_the_stream_early_stops_the_graph_before_close_returns():
    STOPPED_LOCALLY.clear()
    source = from_langgraph(build_graph()).stream(RunRequest("run-lg-close", prompt(pause_ms=20)))
    chunks = 0
    async for event in source:
        chunks += event.type.value == "chunk"
        if chunks == 4:
            break
    await source.aclose()  # type: ignore[attr-defined]
    assert STOPPED_LOCALLY["ungated"]["delivered"] == 4
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_a_node_error_ends_the_run_with_its_message():
    events = await collect(from_langgraph(build_graph()), prompt(fail="marker-123"))
    assert kinds(events) == ["start", "error"]
    assert data(events[-1]) == {
        "error_type": "agent_error",
        "detail": "ScriptedFailure: the scripted model failed on purpose (marker-123)",
    }


async def test_the_recursion_limit_is_max_turns_exceeded():
    events = await collect(from_langgraph(build_graph(), config={"recursion_limit": 2}), prompt())
    assert kinds(events)[-1] == "error" and data(events[-1])["error_type"] == "max_turns_exceeded"
    assert data(events[-1])["detail"].startswith("GraphRecursionError: Recursion limit of 2 reached")
    assert "complete" not in kinds(events)


async def test_an_interrupt_ends_the_run_with_interrupted_and_the_checkpointer_gets_the_run_id_as_thread():
    def ask_a_human(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(str(interrupt("may I refund order A-42?")))]}

    graph = StateGraph(MessagesState)
    graph.add_node("approve", ask_a_human)
    graph.add_edge(START, "approve")
    compiled = graph.compile(checkpointer=InMemorySaver())
    events = await collect(from_langgraph(compiled), "refund A-42", run_id="run-lg-hitl")
    assert kinds(events) == ["start", "error"]
    assert data(events[-1]) == {
        "error_type": "interrupted",
        "detail": "the graph stopped at an interrupt: 'may I refund order A-42?'",
    }
    state = await compiled.aget_state({"configurable": {"thread_id": "run-lg-hitl"}})
    assert state.next == ("approve",) and state.values["messages"][0].content == "refund A-42"


async def test_the_users_config_inputs_and_callbacks_are_kept():
    class Seen(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tools: list[str] = []

        def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
            self.tools.append(serialized["name"])

    seen = Seen()
    triage = ScriptedChatModel(agent_name=FIRST_AGENT)
    agent = from_langgraph(
        build_graph(triage_model=triage),
        config=lambda request: {"callbacks": [seen], "metadata": {"user": request.metadata["user"]}},
        inputs=lambda request: {"messages": [HumanMessage(f"{request.input} (from {request.metadata['user']})")]},
    )
    events = await collect(agent, prompt(), metadata={"user": "ada"})
    assert seen.tools == ["lookup_order", HANDOFF_TOOL]
    assert triage.seen[0][-1].content == f"{prompt()} (from ada)"
    assert text_of(events) == FINAL_OUTPUT


def test_registering_checks_the_graph_and_takes_the_options():
    with pytest.raises(TypeError, match=r"compiled graph \(StateGraph\(...\).compile\(\)\)"):
        from_langgraph(StateGraph(MessagesState))
    agent = from_langgraph(build_graph(), name="support-desk", description="orders", first_agent="front")
    assert (agent.name, agent.description, agent.chunking) == ("support-desk", "orders", None)
    assert agent.first_agent == "front"
    default = from_langgraph(build_graph())
    assert (default.name, default.description) == ("orders", "LangGraph graph orders")
    assert default.first_agent == FIRST_AGENT


def test_a_worker_registry_holds_langgraph_agents_beside_runcast_agents():
    registry = load_registry("tests.support.langgraph_agents:registry")
    assert set(registry) == {*default_registry, "langgraph_support"}
    assert isinstance(registry["langgraph_support"], LangGraphAgent)


def test_runcast_imports_without_langgraph_and_from_langgraph_names_the_extra():
    code = """
import runcast
from runcast import Agent, Client, RunnableAgent, from_langgraph, publisher
import runcast.worker.settings, runcast.worker.job, runcast.gateway.app
assert all(getattr(runcast, name) is not None for name in runcast.__all__)
try:
    from_langgraph(object())
except runcast.MissingExtra as exc:
    print(exc)
"""
    output = message_without("langgraph", code)
    assert "runcast's LangGraph adapter needs langgraph, which is not installed" in output
    assert "pip install 'runcast[langgraph]'" in output
