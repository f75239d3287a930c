"""LangGraph agents for the adapter's tests: a LangChain chat model that speaks the scripted model
(`tests.support.scripted_model`), and the multi-agent graph a LangGraph user would build with it.

The graph: `triage` is an agent of its own (a sub-graph: a model node bound to two tools and a `ToolNode`); it looks
the order up with `lookup_order`, then calls `transfer_to_support`, a handoff tool that returns
`Command(goto="support", graph=Command.PARENT)`; `support` is a model node that streams the answer.

`registry` is what a worker loads (`RUNCAST_AGENTS=tests.support.langgraph_agents:registry`); `direct_output(prompt)`
runs the same graph with LangGraph alone (no runcast) and returns its own final output.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import InjectedToolCallId, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from pydantic import Field

from runcast.worker.adapters import from_langgraph
from runcast.worker.agents import default_registry
from tests.support.scripted_model import (
    FIRST_AGENT,
    HANDOFF_REASON,
    SECOND_AGENT,
    TOOL_ARGS,
    TOOL_NAME,
    TOOL_OUTPUT,
    USAGE,
    Script,
    fail_if_asked,
    next_step,
    text_deltas,
)

MODEL = "scripted-langgraph"
HANDOFF_TOOL = f"transfer_to_{SECOND_AGENT}"


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that streams the scripted model for one agent (`agent_name`), as a provider's chat
    model streams: text deltas, tool-call chunks, usage on the last chunk. `seen` keeps the messages of every call.
    Bound tools are accepted (`bind_tools`) and ignored: the script decides what the model calls."""

    agent_name: str
    model: str = MODEL
    handoffs: bool = True
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError("the scripted model is asynchronous only")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.seen.append(list(messages))
        users = [m for m in messages if isinstance(m, HumanMessage)]
        script = Script.parse(str(users[-1].content) if users else "")
        fail_if_asked(script)
        tool_results = sum(isinstance(m, ToolMessage) for m in messages)
        step = next_step(self.agent_name, tool_results, handoffs=self.handoffs)
        if step == "text":
            async for delta in text_deltas(script):
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        else:
            name, arguments = (TOOL_NAME, TOOL_ARGS) if step == "tool" else (HANDOFF_TOOL, {"reason": HANDOFF_REASON})
            piece = {"name": name, "args": json.dumps(arguments), "id": f"call_{step}", "index": 0}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece]))
        usage = {
            "input_tokens": USAGE["prompt_tokens"],
            "output_tokens": USAGE["completion_tokens"],
            "total_tokens": USAGE["total_tokens"],
        }
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))  # type: ignore[arg-type]


@tool(TOOL_NAME)
def lookup_order(order_id: str) -> str:
    """Look an order up by id."""
    return TOOL_OUTPUT if order_id == TOOL_ARGS["order_id"] else f"no order {order_id}"


@tool(HANDOFF_TOOL)
def transfer_to_support(reason: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Hand the customer over to support."""
    message = ToolMessage(reason, tool_call_id=tool_call_id, name=HANDOFF_TOOL)
    return Command(goto=SECOND_AGENT, graph=Command.PARENT, update={"messages": [message]})


def build_graph(triage_model: BaseChatModel | None = None, support_model: BaseChatModel | None = None) -> Any:
    """The multi-agent graph: `triage` (model + ToolNode sub-graph) hands off to `support` (a model node)."""
    tools = [lookup_order, transfer_to_support]
    triage_llm = (triage_model or ScriptedChatModel(agent_name=FIRST_AGENT)).bind_tools(tools)
    support_llm = support_model or ScriptedChatModel(agent_name=SECOND_AGENT)

    async def triage_agent(state: MessagesState) -> dict[str, Any]:
        prompt = SystemMessage("Look the order up, then hand the customer to support.")
        return {"messages": [await triage_llm.ainvoke([prompt, *state["messages"]])]}

    async def support_agent(state: MessagesState) -> dict[str, Any]:
        prompt = SystemMessage("Answer the customer's question about their order.")
        return {"messages": [await support_llm.ainvoke([prompt, *state["messages"]])]}

    triage = StateGraph(MessagesState)
    triage.add_node("agent", triage_agent)
    triage.add_node("tools", ToolNode(tools))
    triage.add_edge(START, "agent")
    triage.add_conditional_edges("agent", tools_condition)
    triage.add_edge("tools", "agent")

    graph = StateGraph(MessagesState)
    graph.add_node(FIRST_AGENT, triage.compile(name=FIRST_AGENT), destinations=(SECOND_AGENT,))
    graph.add_node(SECOND_AGENT, support_agent)
    graph.add_edge(START, FIRST_AGENT)
    graph.add_edge(SECOND_AGENT, END)
    return graph.compile(name="orders")


graph = build_graph()
registry = {
    **default_registry,
    "langgraph_support": from_langgraph(graph, description="LangGraph: lookup tool, handoff, stream"),
}


async def direct_output(prompt_text: str) -> str:
    """LangGraph's own final output for a prompt: the same graph invoked without runcast, its last message."""
    state = await build_graph().ainvoke({"messages": [HumanMessage(prompt_text)]})
    return str(state["messages"][-1].content)
