"""Any OpenAI-compatible `POST {base}/chat/completions` with `stream: true`, over httpx + httpx-sse.

- Text deltas and tool-call pieces are yielded the moment their SSE chunk arrives (the runner assembles tool
  calls by index).
- 429, 5xx and connection failures are retried with exponential backoff (honouring `Retry-After`) only until the
  first delta has been yielded: a retry after that would stream the answer twice. Later failures raise ModelError.
- `stream_options: {"include_usage": true}` is sent so the last chunk carries token usage; a server that rejects
  the option (400 naming it) is asked again without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError, aconnect_sse

from runcast.shared.settings import Settings
from runcast.worker.providers.base import Message, ModelDelta, ModelError, TextDelta, ToolCallDelta, ToolSpec, Usage

log = logging.getLogger("runcast.worker.openai")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 20.0


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = "gpt-4o-mini",
        *,
        max_retries: int = 3,
        timeout_s: float = 60.0,
        backoff_s: float = 0.25,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.include_usage = True
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(
            settings.openai_base_url,
            key,
            settings.model,
            max_retries=settings.openai_max_retries,
            timeout_s=settings.openai_timeout_s,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(
        self,
        *,
        agent_name: str,
        model: str | None,
        messages: list[Message],
        tools: list[ToolSpec],
        temperature: float | None = None,
    ) -> AsyncIterator[ModelDelta]:
        attempt, started = 0, False
        while True:
            body = self._body(model or self.model, messages, tools, temperature)
            retry_in: float | None = None
            try:
                async with aconnect_sse(self._client, "POST", self.url, json=body) as source:
                    response = source.response
                    if response.status_code != 200:
                        detail = (await response.aread()).decode(errors="replace")[:500]
                        if response.status_code == 400 and self.include_usage and "stream_options" in detail:
                            self.include_usage = False  # an older server: ask again without usage
                            continue
                        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                            raise ModelError(f"{self.url} answered HTTP {response.status_code}: {detail}")
                        retry_in = _retry_after(response) or self._backoff(attempt)
                    else:
                        async for delta in _parse(source):
                            started = True
                            yield delta
                        return
            except (httpx.HTTPError, SSEError) as exc:
                if started or attempt >= self.max_retries:
                    raise ModelError(f"the model stream failed: {type(exc).__name__}: {exc}") from exc
                retry_in = self._backoff(attempt)
            attempt += 1
            log.info("model request for %s failed; retry %d in %.2f s", agent_name, attempt, retry_in)
            await asyncio.sleep(retry_in)

    def _backoff(self, attempt: int) -> float:
        return self.backoff_s * 2**attempt + random.uniform(0, self.backoff_s)

    def _body(
        self, model: str, messages: list[Message], tools: list[ToolSpec], temperature: float | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in messages], "stream": True}
        if temperature is not None:
            body["temperature"] = temperature
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = [{"type": "function", "function": _function(t)} for t in tools]
        return body


def _function(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = message.tool_calls
        out["content"] = message.content or None
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(max(float(response.headers["retry-after"]), 0.0), MAX_RETRY_AFTER_S)
    except (KeyError, ValueError):
        return None


async def _parse(source: EventSource) -> AsyncIterator[ModelDelta]:
    """Deltas from one streamed completion; ModelError on an error chunk or a stream cut before the end."""
    finished = False
    async for sse in source.aiter_sse():
        data = sse.data.strip()
        if not data:
            continue
        if data == "[DONE]":
            return
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            raise ModelError(f"malformed stream chunk: {data[:200]!r}") from None
        if sse.event == "error" or (isinstance(payload, dict) and payload.get("error")):
            error = payload.get("error") if isinstance(payload, dict) else payload
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ModelError(f"the model reported an error: {message}")
        if not isinstance(payload, dict):
            raise ModelError(f"malformed stream chunk: {data[:200]!r}")
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield TextDelta(delta["content"])
            for piece in delta.get("tool_calls") or []:
                function = piece.get("function") or {}
                yield ToolCallDelta(
                    index=int(piece.get("index", 0)),
                    call_id=piece.get("id"),
                    name=function.get("name"),
                    arguments=function.get("arguments") or "",
                )
            finished = finished or bool(choice.get("finish_reason"))
        usage = payload.get("usage")
        if isinstance(usage, dict):
            yield Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    if not finished:
        raise ModelError("the model stream ended before the model finished")
