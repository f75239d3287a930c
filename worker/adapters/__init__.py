"""Agents from other frameworks as runcast `RunnableAgent`s, each behind its optional extra.

`from_jaf(agent, provider)` needs `pip install 'runcast[jaf]'`. The functions here import their framework only when
called, so `import runcast` (and this package) works without any extra, and a missing one is reported as
`MissingExtra` naming the extra to install. The shared adapter toolkit is `runcast.worker.adapters.base`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runcast.worker.adapters.jaf import JafAgent


def from_jaf(agent: Any, model_provider: Any, **options: Any) -> JafAgent:
    """A jaf-py agent (`jaf.Agent`) and its model provider as a runcast agent; see `JafAgent` for the options."""
    from runcast.worker.adapters.jaf import JafAgent  # raises MissingExtra without jaf-py

    return JafAgent(agent, model_provider, **options)


__all__ = ["from_jaf"]
