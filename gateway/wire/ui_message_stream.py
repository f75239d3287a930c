"""The Vercel AI SDK's UI message stream (`x-vercel-ai-ui-message-stream: v1`), encoded from a run's stream entries.

What `DefaultChatTransport` parses (read from the `ai` package, 6.x): SSE frames `data: <one JSON part>`, ending
with `data: [DONE]`. A run maps to one assistant message:

    start            -> start {messageId: run id, messageMetadata: {runId, agent, model}}, start-step
    chunk            -> text-start (first delta of a text block), text-delta
    tool_call        -> text-end (if a block is open), tool-input-start, tool-input-available
    tool_result      -> tool-output-available (or tool-output-error when the tool failed)
    agent_switch     -> text-end, data-agent-switch {from_agent, to_agent, reason}
    metadata         -> message-metadata {agent, model, turns, totalTokens, executionTimeMs}
                        (an `events_lost` notice: data-runcast-events-lost {after, through})
    complete         -> text-end, finish-step, finish {finishReason: stop}, [DONE]
    error            -> text-end, finish-step, error {errorText}, finish {finishReason: error}, [DONE]
    error cancelled  -> text-end, finish-step, abort {reason}, [DONE]          (a stop: not an error to show)

Text after a tool result or a handoff is the model's next turn, so it opens a new step (finish-step, start-step),
as the AI SDK's own server does between model calls. A `reset` (the log was trimmed under a slow reader) becomes a
`data-runcast-reset` part.

Encoding is cached per entry, as for SSE frames (`frames.py`): the parts an entry becomes depend on the entry and on
where the run's stream stands just before it (`Position`: is a text block open, is a step open). Every viewer reads a
run from its first entry, so every viewer reaches an entry at the same position and the encoding is computed once
per entry for all of them; each viewer keeps only its own `Position`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from runcast.shared.streamlog import Entry, Reset

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE = b"data: [DONE]\n\n"

NO_STEP, IN_STEP, AFTER_TOOL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Position:
    """Where a run's UI message stream stands between two entries."""

    text_id: str | None = None  # the open text block, if any
    step: int = NO_STEP  # NO_STEP before start; IN_STEP; AFTER_TOOL: a tool result or handoff ended the model's turn


START = Position()


def part(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def encode_batch(position: Position, batch: list[Entry] | Reset) -> tuple[bytes, Position]:
    """One write for a batch from the feed, and the position after it."""
    if isinstance(batch, Reset):
        return part({"type": "data-runcast-reset", "data": batch.to_dict()}), START
    frames: list[bytes] = []
    for entry in batch:
        frame, position = encode_entry(position, entry)
        frames.append(frame)
    return b"".join(frames), position


@lru_cache(maxsize=8192)
def encode_entry(position: Position, entry: Entry) -> tuple[bytes, Position]:
    """The UI message stream parts of one entry at `position`, and the position after it."""
    event = json.loads(entry.event)
    data = event.get("data") or {}
    kind = event.get("type")
    out: list[dict[str, Any]] = []
    text_id, step = position.text_id, position.step

    def close_text() -> None:
        nonlocal text_id
        if text_id is not None:
            out.append({"type": "text-end", "id": text_id})
            text_id = None

    def close_step() -> None:
        close_text()
        if step != NO_STEP:
            out.append({"type": "finish-step"})

    if kind == "start":
        metadata = {"runId": event.get("run_id"), "agent": data.get("agent_name"), "model": data.get("model_name")}
        out += [{"type": "start", "messageId": event.get("run_id"), "messageMetadata": metadata}]
        out += [{"type": "start-step"}]
        step = IN_STEP
    elif kind == "chunk":
        if step == AFTER_TOOL:
            out += [{"type": "finish-step"}, {"type": "start-step"}]
        elif step == NO_STEP:
            out.append({"type": "start-step"})
        step = IN_STEP
        if text_id is None:
            text_id = f"text-{entry.id}"
            out.append({"type": "text-start", "id": text_id})
        out.append({"type": "text-delta", "id": text_id, "delta": str(data.get("delta", ""))})
    elif kind == "tool_call":
        close_text()
        call = {"toolCallId": str(data.get("call_id", "")), "toolName": str(data.get("tool_name", ""))}
        out += [{"type": "tool-input-start", **call}, {"type": "tool-input-available", **call, "input": _input(data)}]
    elif kind == "tool_result":
        call_id = str(data.get("call_id", ""))
        if data.get("status", "completed") in ("completed", "success"):
            out.append({"type": "tool-output-available", "toolCallId": call_id, "output": data.get("result")})
        else:
            out.append({"type": "tool-output-error", "toolCallId": call_id, "errorText": str(data.get("result"))})
        step = AFTER_TOOL
    elif kind == "agent_switch":
        close_text()
        out.append({"type": "data-agent-switch", "data": data})
        step = AFTER_TOOL
    elif kind == "metadata" and "events_lost" in data:  # a failover lost entries (runcast.worker.tail)
        out.append({"type": "data-runcast-events-lost", "data": data["events_lost"]})
    elif kind == "metadata":
        metadata = {
            "agent": data.get("agent_name"),
            "model": data.get("model_name"),
            "turns": data.get("turn_count"),
            "totalTokens": data.get("total_tokens"),
            "executionTimeMs": data.get("execution_time_ms"),
        }
        out.append({"type": "message-metadata", "messageMetadata": metadata})
    elif kind == "complete":
        close_step()
        out.append({"type": "finish", "finishReason": "stop"})
    elif kind == "error":
        close_step()
        error_type, detail = str(data.get("error_type", "error")), str(data.get("detail", ""))
        if error_type == "cancelled":
            out.append({"type": "abort", "reason": detail or "cancelled"})
        else:
            out.append({"type": "error", "errorText": f"{error_type}: {detail}" if detail else error_type})
            out.append({"type": "finish", "finishReason": "error"})
    # any other event type (a later addition) has no UI message part: nothing to send
    frame = b"".join(map(part, out)) + (DONE if entry.is_terminal else b"")
    return frame, Position(text_id, step)


def _input(data: dict[str, Any]) -> Any:
    arguments = data.get("arguments")
    return arguments if arguments is not None else {}
