"""The async Python client for a runcast gateway (SPEC §8): create runs, tail them with automatic resume, read results.

```python
async with AsyncClient("http://127.0.0.1:8000") as client:
    run = await client.create_run("echo", "Hello")
    async for item in client.stream(run.run_id, run.token):
        print(item.id, item.type, item.event)
```

`stream()` survives disconnects on its own: when the connection drops (or the server ends the response before the
run's terminal event), it reconnects with backoff and resumes with `Last-Event-ID` = the last id it delivered, so the
caller sees every event exactly once. Retries are bounded: `max_retries` failed attempts in a row raise
`GatewayUnavailable`. A `reset` (the resume point was trimmed away, SPEC §6) is surfaced as a `ResetEvent`, never a
silent gap. HTTP answers that retrying cannot fix (400/401/403/404/...) raise at once as typed `RuncastError`s.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from runcast.shared.ids import entry_key
from runcast.shared.streaming import StreamingEvent

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "ConflictError",
    "GatewayUnavailable",
    "PermissionDenied",
    "ResetEvent",
    "RunHandle",
    "RunNotFound",
    "RunStream",
    "RuncastClient",
    "RuncastError",
    "StreamItem",
]


class RuncastError(Exception):
    """An error answer from the gateway (or none at all). `status_code` is the HTTP status when there was one."""

    status_code: int | None = None

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class BadRequest(RuncastError):
    """400, 413, 422: the request itself is wrong (bad run id, bad resume id, input too large, bad body)."""


class AuthenticationError(RuncastError):
    """401: missing, forged or expired run token, or a missing/wrong API key."""


class PermissionDenied(RuncastError):
    """403: the token is valid but for another run."""


class RunNotFound(RuncastError):
    """404: unknown run (or expired after its retention period), or unknown agent."""


class ConflictError(RuncastError):
    """409: e.g. the result of a run that is still going, or a conversation that has an active run
    (`active_run_id`)."""

    active_run_id: str | None = None


class GatewayUnavailable(RuncastError):
    """The gateway could not be reached, or kept failing (5xx, dropped connections) beyond the retry budget."""


_ERRORS_BY_STATUS: dict[int, type[RuncastError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: RunNotFound,
    409: ConflictError,
    413: BadRequest,
    422: BadRequest,
}


def error_for(status_code: int, detail: str) -> RuncastError:
    """The exception for an HTTP error status: 5xx are retryable (`GatewayUnavailable`), other 4xx are not."""
    if status_code >= 500:
        return GatewayUnavailable(detail, status_code)
    return _ERRORS_BY_STATUS.get(status_code, RuncastError)(detail, status_code)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict)) or str(detail)
    return str(detail) if detail is not None else json.dumps(body)[:200]


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if not response.is_closed:
        await response.aread()
    error = error_for(response.status_code, _detail(response))
    if isinstance(error, ConflictError):
        try:
            error.active_run_id = response.json().get("active_run_id")
        except (ValueError, AttributeError):
            pass
    raise error


@dataclass(frozen=True)
class RunHandle:
    """What `POST /v1/runs` answers."""

    run_id: str
    token: str
    events_url: str
    ws_url: str
    status_url: str


@dataclass(frozen=True)
class ResetEvent:
    """The resume point was older than anything still kept: events between `requested` and `first_available` are
    gone (trimmed or expired). The stream goes on from the oldest entry kept."""

    reason: str
    requested: str
    first_available: str
    type: str = "reset"


class StreamItem(NamedTuple):
    """One delivered event: `id` is the stream entry id (None for a reset), `event` the StreamingEvent or ResetEvent.
    Unpacks as `(entry_id, event)`."""

    id: str | None
    event: StreamingEvent | ResetEvent

    @property
    def type(self) -> str:
        """`start`, `chunk`, ..., `complete`, or `reset`."""
        return self.event.type if isinstance(self.event, ResetEvent) else self.event.type.value

    @property
    def is_terminal(self) -> bool:
        """The run's last event (`complete` or `error`)."""
        return isinstance(self.event, StreamingEvent) and self.event.is_terminal


class _Dropped(Exception):
    """The connection ended (or broke) before the run's terminal event: reconnect and resume."""


class RunStream:
    """An async iterator over one run's events that reconnects and resumes by itself.

    Attributes the caller may watch while iterating: `last_event_id` (the resume point), `reconnects` (attempts to
    reconnect so far), `connections` (requests opened). `on_retry(failures, delay_s, exc)` is called before each wait.
    """

    def __init__(
        self,
        client: AsyncClient,
        run_id: str,
        token: str,
        last_event_id: str | None = None,
        *,
        max_retries: int = 8,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        on_retry: Callable[[int, float, Exception], None] | None = None,
    ) -> None:
        self._client = client
        self.on_retry = on_retry
        self.run_id = run_id
        self.token = token
        self.last_event_id = last_event_id
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.reconnects = 0
        self.connections = 0
        self.finished = False

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamItem]:
        failures = 0
        while not self.finished:
            if self.connections:
                self.reconnects += 1
            got_any = False
            try:
                async for item in self._connect():
                    got_any = True
                    failures = 0
                    yield item
                    if item.is_terminal:
                        self.finished = True
                        return
                if await self._ended_before_us():
                    self.finished = True
                    return
                raise _Dropped("the server ended the stream before the run's terminal event")
            except (_Dropped, httpx.TransportError, GatewayUnavailable) as exc:
                if not got_any:
                    failures += 1
                if failures > self.max_retries:
                    raise GatewayUnavailable(
                        f"gave up after {failures} failed attempts to stream run {self.run_id}: {exc}"
                    ) from exc
                delay = self._delay(failures)
                if self.on_retry is not None:
                    self.on_retry(failures, delay, exc)
                await asyncio.sleep(delay)

    async def _ended_before_us(self) -> bool:
        """After a response that ended without a terminal event: True when the run had in fact already ended at or
        before our resume point (we resumed after its terminal event). A run that expired meanwhile raises
        RunNotFound; anything else means the connection was cut and we resume."""
        status = await self._client.status(self.run_id, self.token)
        last = status.get("last_event_id")
        return (
            status.get("status") in ("completed", "failed", "cancelled")
            and self.last_event_id is not None
            and last is not None
            and entry_key(last) <= entry_key(self.last_event_id)
        )

    def _delay(self, failures: int) -> float:
        """Exponential backoff with full jitter; an immediate first retry after a stream that was delivering."""
        if failures == 0:
            return 0.0
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _connect(self) -> AsyncIterator[StreamItem]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        url = self._client.url(f"/v1/runs/{self.run_id}/events")
        self.connections += 1
        async with aconnect_sse(
            self._client.http, "GET", url, headers=headers, timeout=self._client.stream_timeout
        ) as src:
            await _raise_for_status(src.response)
            content_type = src.response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise RuncastError(f"{url} answered {content_type or 'no content type'}, not an event stream")
            async for sse in src.aiter_sse():
                item = self._decode(sse)
                if item is None:
                    continue
                yield item

    def _decode(self, sse: ServerSentEvent) -> StreamItem | None:
        if sse.event == "reset":
            data = json.loads(sse.data)
            return StreamItem(
                None, ResetEvent(data.get("reason", "trimmed"), data["requested"], data["first_available"])
            )
        if not sse.id:
            return None  # not an event of ours (comments/pings never reach here; be lenient with anything else)
        if self.last_event_id is not None and entry_key(sse.id) <= entry_key(self.last_event_id):
            return None  # already delivered: resuming must never repeat an event
        self.last_event_id = sse.id
        return StreamItem(sse.id, StreamingEvent.from_json(sse.data))


class AsyncClient:
    """Async client for one gateway (or a load balancer in front of several; any gateway can resume any run).

    `api_key` is sent as `Authorization: Bearer` when creating and cancelling runs (RUNCAST_API_KEYS).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        stream_read_timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise BadRequest(f"bad gateway URL {base_url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BadRequest(f"gateway URL must look like http://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self._own_http = http is None
        # Reads on a stream may wait for the next event; the server pings every 15 s, so 60 s of silence is a dead
        # connection, not an idle run.
        self.stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (unless the `http` client was passed in)."""
        if self._own_http:
            await self.http.aclose()

    def url(self, path: str) -> str:
        """The gateway URL of `path` (`/v1/...`)."""
        return f"{self.base_url}{path}"

    def _key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, self.url(path), **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(
                f"cannot reach the gateway at {self.base_url}: {exc or type(exc).__name__}"
            ) from exc
        await _raise_for_status(response)
        return response

    async def agents(self) -> list[dict[str, str]]:
        """The agents the workers serve: `[{"name": ..., "description": ...}]`."""
        return (await self._request("GET", "/v1/agents")).json()

    async def create_run(
        self,
        agent: str,
        input: str,
        metadata: dict[str, Any] | None = None,
        *,
        conversation_id: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        external: bool = False,
    ) -> RunHandle:
        """Start a run. `conversation_id`: continue that conversation (the agent sees its history; the run's turn is
        added when it completes; ConflictError with `active_run_id` while another run of it is going). `messages`:
        prior messages (`{"role": "user" | "assistant" | "tool", "content": ...}`) for this run alone.
        `external=True`: the run is published by your own producer through `runcast.publisher`, not a worker.
        `RunNotFound` for an unknown agent."""
        body: dict[str, Any] = {"agent": agent, "input": input}
        if metadata is not None:
            body["metadata"] = metadata
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        if messages is not None:
            body["messages"] = messages
        if external:
            body["external"] = True
        data = (await self._request("POST", "/v1/runs", json=body, headers=self._key_headers())).json()
        return RunHandle(**{name: data[name] for name in RunHandle.__dataclass_fields__})

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """`{"conversation_id", "messages", "active_run_id"}`: the history runcast keeps (API key when keys are set)."""
        return (await self._request("GET", f"/v1/conversations/{conversation_id}", headers=self._key_headers())).json()

    def stream(self, run_id: str, token: str, last_event_id: str | None = None, **retry: Any) -> RunStream:
        """The run's events after `last_event_id` (from the start when None), until its terminal event."""
        return RunStream(self, run_id, token, last_event_id, **retry)

    async def status(self, run_id: str, token: str) -> dict[str, Any]:
        """`{"status": "queued" | "running" | "completed" | "failed" | "cancelled", "last_event_id": ..., ...}`."""
        return (await self._request("GET", f"/v1/runs/{run_id}", params={"token": token})).json()

    async def result(self, run_id: str, token: str) -> dict[str, Any]:
        """The final StreamingBuffer; raises ConflictError while the run is still going."""
        return (await self._request("GET", f"/v1/runs/{run_id}/result", params={"token": token})).json()

    async def cancel(self, run_id: str, token: str | None = None) -> dict[str, Any]:
        """Ask the gateway to end the run with an `error` event of type `cancelled` (API key when keys are set)."""
        params = {"token": token} if token else None
        response = await self._request("POST", f"/v1/runs/{run_id}/cancel", headers=self._key_headers(), params=params)
        return response.json() if response.content else {}


RuncastClient = AsyncClient
"""The name this client had before `runcast.AsyncClient`; kept for existing code."""
