"""The agents the AI SDK tests run (`RUNCAST_AGENTS=tests.support.chat_agents:registry`): the built-in ones, and
`slowdemo`, the calculator agent on a scripted model that pauses 250 ms between tokens, so a run lasts a few seconds:
long enough for a second client to join it mid-run, or for a stop to land while it is going, under any load."""

from __future__ import annotations

from dataclasses import replace

from runcast.worker.agents import default_registry
from runcast.worker.providers.scripted import ScriptedProvider

SLOW_DELAY_MS = 250

registry = {
    **default_registry,
    "slowdemo": replace(
        default_registry["demo"],
        name="slowdemo",
        description="the demo agent, slowly",
        provider=ScriptedProvider(delay_ms=SLOW_DELAY_MS),
    ),
}
