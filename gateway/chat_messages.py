"""What the AI SDK's `DefaultChatTransport` POSTs, and how its UI messages become runcast's history messages.

The body (ai 6.x, `HttpChatTransport.sendMessages`): `{id, messages, trigger, messageId, ...the app's own body}`,
each message `{id, role, parts: [...], metadata?}`. runcast keeps the conversation itself (keyed by the chat id), so
of the messages it needs the last one, the user's input; the earlier ones only seed a conversation runcast does
not know (a new or expired chat whose messages the app kept), trimmed like any conversation to its newest
`max_messages` messages and `max_bytes`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from runcast.shared.conversations import CONVERSATION_ID_RE

Message = dict[str, Any]


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=256)
    role: Literal["user", "assistant", "system"]
    parts: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)


class ChatRequest(BaseModel):
    """The body `useChat` / `DefaultChatTransport` sends. Other fields (the transport's `body` option) are ignored."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=CONVERSATION_ID_RE.pattern, description="the chat id: runcast's conversation id")
    messages: list[UIMessage] = Field(min_length=1, max_length=100_000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(None, max_length=256)


def user_input(request: ChatRequest) -> tuple[str, str]:
    """The id and text of the message to answer: the last message, which must be the user's, with text."""
    last = request.messages[-1]
    if last.role != "user":
        raise HTTPException(
            422, "the last message must be a user message: runcast runs tools on the server, nothing to continue"
        )
    text = _text(last.parts, "\n")
    if not text:
        raise HTTPException(422, "the last message has no text part")
    return last.id, text


def to_history(messages: list[UIMessage]) -> list[Message]:
    """UI messages as history messages (OpenAI chat shape). Each assistant step becomes an assistant message with
    its tool calls, followed by one tool message per answered call; unanswered calls and non-text parts are dropped
    (a model must never see a call without its result). System messages are refused: the agent has its own."""
    history: list[Message] = []
    for message in messages:
        if message.role == "system":
            raise HTTPException(422, "system messages are not accepted: the agent's instructions are its system prompt")
        if message.role == "user":
            history.append({"role": "user", "content": _text(message.parts, "\n"), "id": message.id})
            continue
        for step in _steps(message.parts):
            history += _assistant_step(step)
        if history and history[-1]["role"] == "assistant":
            history[-1]["id"] = message.id
    return history


def trim(history: list[Message], max_messages: int, max_bytes: int) -> list[Message]:
    """The newest messages within both limits, starting at a user message (never an orphaned tool result)."""
    kept = history[-max_messages:]
    size = sum(len(json.dumps(m, separators=(",", ":"))) for m in kept)
    while kept and (size > max_bytes or kept[0]["role"] != "user"):
        size -= len(json.dumps(kept.pop(0), separators=(",", ":")))
    return kept


def _text(parts: list[dict[str, Any]], sep: str) -> str:
    return sep.join(p["text"] for p in parts if p.get("type") == "text" and isinstance(p.get("text"), str))


def _steps(parts: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    steps: list[list[dict[str, Any]]] = [[]]
    for p in parts:
        if p.get("type") == "step-start":
            steps.append([])
        else:
            steps[-1].append(p)
    return [step for step in steps if step]


def _assistant_step(parts: list[dict[str, Any]]) -> list[Message]:
    calls: list[dict[str, Any]] = []
    results: list[Message] = []
    for p in parts:
        kind = str(p.get("type", ""))
        if not (kind.startswith("tool-") or kind == "dynamic-tool") or not isinstance(p.get("toolCallId"), str):
            continue
        name = str(p.get("toolName", "")) if kind == "dynamic-tool" else kind[len("tool-") :]
        if p.get("state") == "output-available":
            output = p.get("output")
            content = output if isinstance(output, str) else json.dumps(output, default=str)
        elif p.get("state") == "output-error":
            content = f"Error: {p.get('errorText', '')}"
        else:
            continue
        arguments = json.dumps(p.get("input") if p.get("input") is not None else {}, default=str)
        calls.append({"id": p["toolCallId"], "type": "function", "function": {"name": name, "arguments": arguments}})
        results.append({"role": "tool", "content": content, "tool_call_id": p["toolCallId"], "name": name})
    text = _text(parts, "")
    if not text and not calls:
        return []
    assistant: Message = {"role": "assistant", "content": text}
    if calls:
        assistant["tool_calls"] = calls
    return [assistant, *results]
