"""A deterministic, offline model: streams scripted tokens at a fixed pace (`delay_ms` apart).

It behaves by what the agent offers it, so it drives user agents too:
- a `transfer_to_<agent>` tool and no handoff yet in the conversation: it says so and calls that tool;
- a `calculator` tool and arithmetic in the user's input: it calls the calculator (arguments streamed in pieces),
  then answers with the tool's result;
- an agent whose instructions ask it to say "how many earlier messages" it sees (the built-in `chat` agent): it
  reports the number of messages before the user's input and quotes the user's previous message, then the input
  (so a test, or the demo page, can see that the agent was given the conversation's history);
- otherwise it streams the user's input back, one whitespace-delimited token per delta (echo).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from runcast.worker.calculator import find_expression
from runcast.worker.providers.base import Message, ModelDelta, TextDelta, ToolCallDelta, ToolSpec, Usage

_TOKEN_RE = re.compile(r"\s*\S+")
HANDOFF_PREFIX = "transfer_to_"
HISTORY_REPORT = "how many earlier messages"
"""Instructions containing this phrase make the scripted model report the history it was given."""


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


def _pieces(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def _until(loop: asyncio.AbstractEventLoop, at: float) -> None:
    """Sleep until loop time `at`; no pause at all when it has passed.

    The model's pace is its own, like a real model's: tokens come `delay_ms` apart from the stream's start however
    late the consumer reads them (a real stream buffers them in the socket), so a busy worker does not slow the
    model down, it only falls behind it (which is what the benchmark's run length measures).
    """
    wait = at - loop.time()
    if wait > 0:
        await asyncio.sleep(wait)


class ScriptedProvider:
    name = "scripted"

    def __init__(self, delay_ms: int = 20) -> None:
        self.delay_s = delay_ms / 1000

    async def stream(
        self,
        *,
        agent_name: str,
        model: str | None,
        messages: list[Message],
        tools: list[ToolSpec],
        temperature: float | None = None,
    ) -> AsyncIterator[ModelDelta]:
        text, call = self._plan(messages, tools)
        loop = asyncio.get_running_loop()
        start = loop.time()
        emitted = 0
        for token in split_tokens(text):
            if emitted and self.delay_s:
                await _until(loop, start + emitted * self.delay_s)
            emitted += 1
            yield TextDelta(token)
        if call is not None:
            name, arguments = call
            call_id = f"call_{sum(m.role == 'assistant' for m in messages)}_{name}"
            for i, piece in enumerate(_pieces(json.dumps(arguments))):
                if (emitted or i) and self.delay_s:
                    await _until(loop, start + emitted * self.delay_s)
                emitted += 1
                yield ToolCallDelta(0, call_id if i == 0 else None, name if i == 0 else None, piece)
        prompt = sum(len(split_tokens(m.content)) for m in messages)
        yield Usage(prompt_tokens=prompt, completion_tokens=emitted)

    def _plan(self, messages: list[Message], tools: list[ToolSpec]) -> tuple[str, tuple[str, dict] | None]:
        """What to say this turn, and which tool to call (if any)."""
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        user_text = messages[last_user].content if last_user >= 0 else ""
        since_user = messages[last_user + 1 :]
        tool_names = {t.name for t in tools}
        calc_results = [m for m in since_user if m.role == "tool" and m.name == "calculator"]
        if calc_results:
            result = calc_results[-1].content
            if result.startswith("Error"):
                return f"I could not work that out: {result}", None
            return f"The answer is {result}.", None
        handed_off = any(m.role == "tool" and (m.name or "").startswith(HANDOFF_PREFIX) for m in since_user)
        handoffs = sorted(name for name in tool_names if name.startswith(HANDOFF_PREFIX))
        if handoffs and not handed_off:
            target = handoffs[0][len(HANDOFF_PREFIX) :]
            return f"Routing you to {target}.", (handoffs[0], {"reason": f"{target} handles this request"})
        expression = find_expression(user_text) if "calculator" in tool_names else None
        if expression is not None:
            return f"Let me calculate {expression}.", ("calculator", {"expression": expression})
        if any(m.role == "system" and HISTORY_REPORT in m.content for m in messages):
            return report_history(messages, last_user), None
        return user_text, None


def report_history(messages: list[Message], last_user: int) -> str:
    """`Earlier messages: N.` (every message before the input but the system prompt), the user's previous message
    if there is one, then the input."""
    earlier = [m for m in messages[:last_user] if m.role != "system"]
    previous = next((m.content for m in reversed(earlier) if m.role == "user"), None)
    said = f' Before, you said "{previous}".' if previous is not None else ""
    user_text = messages[last_user].content if last_user >= 0 else ""
    return f"Earlier messages: {len(earlier)}.{said} You said: {user_text}"
