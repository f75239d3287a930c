"""The scripted model (`tests.support.scripted_model`) behind a real OpenAI-compatible chat-completions endpoint, for
frameworks that insist on talking to a model over HTTP (the OpenAI Agents SDK's `OpenAIChatCompletionsModel`).

Unlike `tests.support.fake_openai` (a queue of canned responses, for the provider's own tests), this server decides
each answer from the request, as a model would: the agent is named by the request's `model`
(`scripted-<agent>`, see `model_for`), the script comes from the first user message, and the number of `tool`
messages tells where the run is (`next_step`). The first agent calls `lookup_order`, then the handoff tool
(`transfer_to_<second agent>`, with `{"reason": HANDOFF_REASON}`), the second streams `DELTAS` as `text_deltas`
produces them (pause, gate, stop record). `#fail=` answers HTTP 500 with the marker in the error's message.
Usage is sent as OpenAI does: one last chunk when the request asks for it (`stream_options.include_usage`).

The server runs uvicorn on a free loopback port in a thread of its own (its own event loop), so a module-scoped
fixture can keep it across tests whose event loops come and go, and a worker process can reach it by URL.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import fake_openai as chunks
from tests.support.ports import free_port
from tests.support.scripted_model import (
    DELTAS,
    FIRST_AGENT,
    HANDOFF_REASON,
    SECOND_AGENT,
    TOOL_ARGS,
    TOOL_NAME,
    USAGE,
    Script,
    ScriptedFailure,
    fail_if_asked,
    next_step,
    text_deltas,
)

MODEL_PREFIX = "scripted-"
HANDOFF_TOOL = f"transfer_to_{SECOND_AGENT}"
"""The SDK's default name for a handoff tool to the second agent."""
START_TIMEOUT_S = 30.0


def model_for(agent_name: str) -> str:
    """The model name an agent uses with this server: it tells the server which agent is asking."""
    return f"{MODEL_PREFIX}{agent_name}"


class ScriptedChatServer:
    """`POST /v1/chat/completions` speaking the scripted model; `requests` keeps every request body (in order)."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @contextlib.contextmanager
    def running(self) -> Iterator[ScriptedChatServer]:
        self._thread = threading.Thread(target=self._server.run, name="scripted-chat-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scripted chat-completions server did not start")
            time.sleep(0.01)
        try:
            yield self
        finally:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        messages = body.get("messages", [])
        script = Script.parse(_first_user_text(messages))
        try:
            fail_if_asked(script)
        except ScriptedFailure as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "server_error"}}, status_code=500)
        agent = str(body.get("model", "")).removeprefix(MODEL_PREFIX)
        step = next_step(agent, sum(1 for m in messages if m.get("role") == "tool"))
        if not body.get("stream"):
            return JSONResponse(_whole_completion(body, step))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(self._stream(script, step, include_usage), media_type="text/event-stream")

    async def _stream(self, script: Script, step: str, include_usage: bool) -> AsyncIterator[bytes]:
        if step == "text":
            async for delta in text_deltas(script, self.redis_url):
                yield _sse(chunks.text(delta).payload)
            yield _sse(chunks.finish("stop").payload)
        else:
            name, arguments = _call(step)
            yield _sse(chunks.tool_piece(0, arguments, call_id=f"call_{step}", name=name).payload)
            yield _sse(chunks.finish("tool_calls").payload)
        if include_usage:
            usage = chunks.usage(USAGE["prompt_tokens"], USAGE["completion_tokens"])
            yield _sse(usage.payload)
        yield b"data: [DONE]\n\n"


def _call(step: str) -> tuple[str, str]:
    if step == "tool":
        return TOOL_NAME, json.dumps(TOOL_ARGS)
    return HANDOFF_TOOL, json.dumps({"reason": HANDOFF_REASON})


def _whole_completion(body: dict[str, Any], step: str) -> dict[str, Any]:
    """The non-streaming answer (the SDK's `Runner.run`): the same step, whole."""
    if step == "text":
        message: dict[str, Any] = {"role": "assistant", "content": "".join(DELTAS)}
        reason = "stop"
    else:
        name, arguments = _call(step)
        call = {"id": f"call_{step}", "type": "function", "function": {"name": name, "arguments": arguments}}
        message, reason = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", model_for(FIRST_AGENT)),
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": USAGE,
    }


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
