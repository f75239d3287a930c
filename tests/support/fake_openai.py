"""A scripted, local OpenAI-compatible streaming server (Starlette under uvicorn on a free loopback port).

Each request to `POST /v1/chat/completions` takes the next script queued with `enqueue(...)`. A script is a list
of steps: `Status(429)` answers at once with that status; otherwise the steps stream SSE chunks in order:
`Chunk(payload)`, `Gate(event)` (hold until the test sets it), `Sleep(s)`, `Drop()` (cut the connection), `Done()`.
The server records every request body and every chunk it has sent, so tests can check timing and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.ports import free_port


@dataclass(frozen=True)
class Status:
    code: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"


@dataclass(frozen=True)
class Chunk:
    payload: dict[str, Any]


@dataclass(frozen=True)
class Gate:
    event: asyncio.Event


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Drop:
    """Cut the connection mid-stream (no terminating chunk)."""


@dataclass(frozen=True)
class Done:
    pass


Step = Status | Chunk | Gate | Sleep | Drop | Done


def text(content: str) -> Chunk:
    return Chunk({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]})


def tool_piece(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> Chunk:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        piece.update(id=call_id, type="function")
        piece["function"]["name"] = name
    return Chunk({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]})


def finish(reason: str = "stop") -> Chunk:
    return Chunk({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})


def usage(prompt: int, completion: int) -> Chunk:
    return Chunk(
        {
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
    )


def error_chunk(message: str) -> Chunk:
    return Chunk({"error": {"message": message, "type": "server_error"}})


def answer(*pieces: str) -> list[Step]:
    """A complete text answer streamed piece by piece."""
    return [*(text(p) for p in pieces), finish(), usage(10, len(pieces)), Done()]


class _Dropped(Exception):
    pass


class FakeOpenAI:
    def __init__(self) -> None:
        self.port = free_port()
        self.scripts: deque[list[Step]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.sent: list[dict[str, Any]] = []
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *steps: Step) -> None:
        self.scripts.append(list(steps))

    @property
    def sent_texts(self) -> list[str]:
        return [c["choices"][0]["delta"].get("content", "") for c in self.sent if c.get("choices")]

    async def _completions(self, request: Request) -> Response:
        self.requests.append(await request.json())
        self.authorizations.append(request.headers.get("authorization"))
        if not self.scripts:
            return JSONResponse({"error": {"message": "no script left"}}, status_code=500)
        steps = self.scripts.popleft()
        if steps and isinstance(steps[0], Status):
            status = steps[0]
            return JSONResponse({"error": {"message": status.message}}, status.code, headers=status.headers)
        return StreamingResponse(self._stream(steps), media_type="text/event-stream")

    async def _stream(self, steps: list[Step]) -> AsyncIterator[bytes]:
        for step in steps:
            if isinstance(step, Chunk):
                self.sent.append(step.payload)
                yield f"data: {json.dumps(step.payload)}\n\n".encode()
            elif isinstance(step, Gate):
                await step.event.wait()
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Drop):
                raise _Dropped("scripted connection drop")
            elif isinstance(step, Done):
                yield b"data: [DONE]\n\n"

    async def __aenter__(self) -> FakeOpenAI:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
