"""Agents from other frameworks as runcast `RunnableAgent`s, each behind its optional extra.

`from_jaf(agent, provider)` needs `pip install 'runcast[jaf]'`, `from_langgraph(graph)` `runcast[langgraph]`,
`from_openai_agents(agent)` `runcast[openai-agents]`, `from_pydantic_ai(agent)` `runcast[pydantic-ai]`. The
functions here import their framework only when called, so `import runcast` (and this package) works without any
extra, and a missing one is reported as `MissingExtra` naming the extra to install. The shared adapter toolkit is
`runcast.worker.adapters.base`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runcast.worker.adapters.jaf import JafAgent
    from runcast.worker.adapters.langgraph import LangGraphAgent
    from runcast.worker.adapters.openai_agents import OpenAIAgentsAgent
    from runcast.worker.adapters.pydantic_ai import PydanticAIAgent


def from_jaf(agent: Any, model_provider: Any, **options: Any) -> JafAgent:
    """A jaf-py agent (`jaf.Agent`) and its model provider as a runcast agent; see `JafAgent` for the options."""
    from runcast.worker.adapters.jaf import JafAgent  # raises MissingExtra without jaf-py

    return JafAgent(agent, model_provider, **options)


def from_langgraph(graph: Any, **options: Any) -> LangGraphAgent:
    """A compiled LangGraph graph as a runcast agent; see `LangGraphAgent` for the options."""
    from runcast.worker.adapters.langgraph import LangGraphAgent  # raises MissingExtra without langgraph

    return LangGraphAgent(graph, **options)


def from_pydantic_ai(agent: Any, **options: Any) -> PydanticAIAgent:
    """A PydanticAI agent (`pydantic_ai.Agent`) as a runcast agent; see `PydanticAIAgent` for the options."""
    from runcast.worker.adapters.pydantic_ai import PydanticAIAgent  # raises MissingExtra without pydantic-ai-slim

    return PydanticAIAgent(agent, **options)


def from_openai_agents(agent: Any, **options: Any) -> OpenAIAgentsAgent:
    """An OpenAI Agents SDK agent (`agents.Agent`) as a runcast agent; see `OpenAIAgentsAgent` for the options."""
    from runcast.worker.adapters.openai_agents import OpenAIAgentsAgent  # raises MissingExtra without openai-agents

    return OpenAIAgentsAgent(agent, **options)


__all__ = ["from_jaf", "from_langgraph", "from_openai_agents", "from_pydantic_ai"]
