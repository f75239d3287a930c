"""A deterministic, offline model: streams scripted tokens with a fixed pause between them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from worker.providers.base import Message, ModelDelta, TextDelta, ToolSpec, Usage

_TOKEN_RE = re.compile(r"\s*\S+")


def split_tokens(text: str) -> list[str]:
    """Whitespace-delimited tokens, each keeping its leading space; they join back to `text` exactly."""
    tokens = _TOKEN_RE.findall(text)
    rest = text[sum(map(len, tokens)) :]
    if rest:
        if tokens:
            tokens[-1] += rest
        else:
            tokens.append(rest)
    return tokens


class ScriptedProvider:
    name = "scripted"

    def __init__(self, delay_ms: int = 20) -> None:
        self.delay_s = delay_ms / 1000

    async def stream(
        self, *, agent_name: str, model: str | None, messages: list[Message], tools: list[ToolSpec]
    ) -> AsyncIterator[ModelDelta]:
        user_text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        tokens = split_tokens(user_text)
        for i, token in enumerate(tokens):
            if i and self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield TextDelta(token)
        yield Usage(prompt_tokens=len(tokens), completion_tokens=len(tokens))
