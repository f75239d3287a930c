"""One registry with every framework's test agent, so one worker process serves the end-to-end checks of all four
adapters (`tests/test_adapters_e2e.py`): the suite pays for one worker start and one import of each framework."""

from __future__ import annotations

from tests.support import jaf_agents, langgraph_agents, openai_agents, pydantic_ai_agents

registry = {
    **jaf_agents.registry,
    **langgraph_agents.registry,
    **openai_agents.registry,
    **pydantic_ai_agents.registry,
}
