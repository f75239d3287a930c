"""The async Python client for a runcast gateway (SPEC §8): create runs, tail them with automatic resume, read results.

```python
async with AsyncClient("http://127.0.0.1:8000") as client:
    run = await client.create_run("echo", "Hello")
    async for item in client.stream(run.run_id, run.token):
        print(item.id, item.type, item.event)
```

`stream()` survives disconnects on its own: when the connection drops (or the server ends the response before the
run's terminal event), it reconnects with backoff and resumes with `Last-Event-ID` = the last id it delivered, so the
caller sees every event exactly once. A `reset` (the resume point was trimmed away, SPEC §6) is surfaced as a
`ResetEvent`, never a silent gap.

Every request, creates included, is retried on 503/429/5xx and refused or broken connections, with jittered backoff
that honours `Retry-After` (`runcast.shared.retry`), until the retry budget is spent; then a typed error
(`GatewayUnavailable`, `RateLimited`). Creates are safe to retry because each `create_run` call sends its own
`Idempotency-Key`: a retry of a create that did happen returns the same run instead of starting a second one.
HTTP answers that retrying cannot fix (400/401/403/404/...) raise at once as typed `RuncastError`s.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Self, TypeVar

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from runcast.shared.client_errors import (
    AuthenticationError,
    BadRequest,
    ConflictError,
    GatewayUnavailable,
    PermissionDenied,
    RateLimited,
    RuncastError,
    RunNotFound,
    error_for,
    raise_for_status,
    unreachable,
)
from runcast.shared.ids import entry_key
from runcast.shared.retry import Retrier, RetryPolicy
from runcast.shared.streaming import StreamingEvent

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "ConflictError",
    "GatewayUnavailable",
    "PermissionDenied",
    "RateLimited",
    "ResetEvent",
    "RetryPolicy",
    "RunHandle",
    "RunNotFound",
    "RunStream",
    "RuncastClient",
    "RuncastError",
    "StreamItem",
    "error_for",
]

T = TypeVar("T")
RetryOption = RetryPolicy | bool | None
"""Per call: a RetryPolicy, False (one attempt), or None (the client's policy)."""


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
    reconnect so far), `connections` (requests opened), `delays` (every wait so far, seconds).
    `on_retry(failures, delay_s, exc)` is called before each wait. Retries follow `retry` (default: the client's
    policy); `max_retries`, `backoff_s` and `max_backoff_s` override its fields.
    """

    def __init__(
        self,
        client: AsyncClient,
        run_id: str,
        token: str,
        last_event_id: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        backoff_s: float | None = None,
        max_backoff_s: float | None = None,
        on_retry: Callable[[int, float, Exception], None] | None = None,
    ) -> None:
        self._client = client
        self.on_retry = on_retry
        self.run_id = run_id
        self.token = token
        self.last_event_id = last_event_id
        overrides = {"max_retries": max_retries, "base_s": backoff_s, "cap_s": max_backoff_s}
        self.retry = replace(retry or client.retry, **{k: v for k, v in overrides.items() if v is not None})
        self.reconnects = 0
        self.connections = 0
        self.delays: list[float] = []
        self.finished = False

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamItem]:
        retrier = Retrier(self.retry, self.on_retry)
        retrier.delays = self.delays
        while not self.finished:
            if self.connections:
                self.reconnects += 1
            got_any = False
            try:
                async for item in self._connect():
                    got_any = True
                    retrier.reset()
                    yield item
                    if item.is_terminal:
                        self.finished = True
                        return
                if await self._ended_before_us():
                    self.finished = True
                    return
                raise _Dropped("the server ended the stream before the run's terminal event")
            except (_Dropped, httpx.TransportError, GatewayUnavailable, RateLimited) as exc:
                if got_any:  # it was delivering: resume at once (a failure right after counts as the first)
                    await retrier.wait(0.0, exc)
                    continue
                delay = retrier.next_delay(exc, getattr(exc, "retry_after", None))
                if delay is None:
                    raise GatewayUnavailable(
                        f"gave up after {retrier.failures} failed attempts to stream run {self.run_id}: {exc}",
                        getattr(exc, "status_code", None),
                        retry_after=getattr(exc, "retry_after", None),
                        attempts=retrier.failures,
                    ) from exc
                await retrier.wait(delay, exc)

    async def _ended_before_us(self) -> bool:
        """After a response that ended without a terminal event: True when the run had in fact already ended at or
        before our resume point (we resumed after its terminal event). A run that expired meanwhile raises
        RunNotFound; anything else means the connection was cut and we resume."""
        status = await self._client.status(self.run_id, self.token, retry=False)  # the stream's own loop retries
        last = status.get("last_event_id")
        return (
            status.get("status") in ("completed", "failed", "cancelled")
            and self.last_event_id is not None
            and last is not None
            and entry_key(last) <= entry_key(self.last_event_id)
        )

    async def _connect(self) -> AsyncIterator[StreamItem]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        url = self._client.url(f"/v1/runs/{self.run_id}/events")
        self.connections += 1
        async with aconnect_sse(
            self._client.http, "GET", url, headers=headers, timeout=self._client.stream_timeout
        ) as src:
            await raise_for_status(src.response)
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

    `api_key` is sent as `Authorization: Bearer` when creating and cancelling runs (RUNCAST_API_KEYS). `retry` is how
    every request and stream retries (`RetryPolicy()`: 8 retries, 0.2 s doubling to 5 s, 120 s of waiting at most);
    each method takes `retry=` to override it for one call (`False`: a single attempt). `on_retry(failures, delay_s,
    exc)` hears of every wait of a request (streams take their own, `stream(..., on_retry=)`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        stream_read_timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[int, float, Exception], None] | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise BadRequest(f"bad gateway URL {base_url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BadRequest(f"gateway URL must look like http://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
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

    async def _request(self, method: str, path: str, *, retry: RetryOption = None, **kwargs: Any) -> httpx.Response:
        async def once() -> httpx.Response:
            try:
                response = await self.http.request(method, self.url(path), **kwargs)
            except httpx.TransportError as exc:
                raise unreachable(self.base_url, exc) from exc
            await raise_for_status(response)
            return response

        return await self.retrying(once, retry)

    async def retrying(self, call: Callable[[], Awaitable[T]], retry: RetryOption = None) -> T:
        """Run `call` until it succeeds, waiting between attempts that fail with a retryable RuncastError."""
        if isinstance(retry, RetryPolicy):
            policy = retry
        else:
            policy = replace(self.retry, max_retries=0) if retry is False else self.retry
        retrier = Retrier(policy, self.on_retry)
        while True:
            try:
                return await call()
            except RuncastError as exc:
                if not exc.retryable:
                    raise
                delay = retrier.next_delay(exc, exc.retry_after)
                if delay is None:
                    raise exc.gave_up(retrier.failures) from exc
                await retrier.wait(delay, exc)

    async def agents(self, *, retry: RetryOption = None) -> list[dict[str, str]]:
        """The agents the workers serve: `[{"name": ..., "description": ...}]`."""
        return (await self._request("GET", "/v1/agents", retry=retry)).json()

    async def create_run(
        self,
        agent: str,
        input: str,
        metadata: dict[str, Any] | None = None,
        *,
        conversation_id: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        external: bool = False,
        idempotency_key: str | None = None,
        retry: RetryOption = None,
    ) -> RunHandle:
        """Start a run. `conversation_id`: continue that conversation (the agent sees its history; the run's turn is
        added when it completes; ConflictError with `active_run_id` while another run of it is going). `messages`:
        prior messages (`{"role": "user" | "assistant" | "tool", "content": ...}`) for this run alone.
        `external=True`: the run is published by your own producer through `runcast.publisher`, not a worker.
        `RunNotFound` for an unknown agent.

        Retried like every request, safely: all attempts carry the same `Idempotency-Key`, so a retry of a create
        that did happen answers with that run (a fresh key per call unless `idempotency_key` is given: pass your own
        to make a create safe to repeat across restarts of your program too)."""
        body: dict[str, Any] = {"agent": agent, "input": input}
        if metadata is not None:
            body["metadata"] = metadata
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        if messages is not None:
            body["messages"] = messages
        if external:
            body["external"] = True
        headers = {**self._key_headers(), "Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        data = (await self._request("POST", "/v1/runs", json=body, headers=headers, retry=retry)).json()
        return RunHandle(**{name: data[name] for name in RunHandle.__dataclass_fields__})

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """`{"conversation_id", "messages", "active_run_id"}`: the history runcast keeps (API key when keys are set)."""
        return (await self._request("GET", f"/v1/conversations/{conversation_id}", headers=self._key_headers())).json()

    def stream(self, run_id: str, token: str, last_event_id: str | None = None, **retry: Any) -> RunStream:
        """The run's events after `last_event_id` (from the start when None), until its terminal event."""
        return RunStream(self, run_id, token, last_event_id, **retry)

    async def status(self, run_id: str, token: str, *, retry: RetryOption = None) -> dict[str, Any]:
        """`{"status": "queued" | "running" | "completed" | "failed" | "cancelled", "last_event_id": ..., ...}`."""
        return (await self._request("GET", f"/v1/runs/{run_id}", params={"token": token}, retry=retry)).json()

    async def result(self, run_id: str, token: str, *, retry: RetryOption = None) -> dict[str, Any]:
        """The final StreamingBuffer; raises ConflictError while the run is still going."""
        path = f"/v1/runs/{run_id}/result"
        return (await self._request("GET", path, params={"token": token}, retry=retry)).json()

    async def cancel(self, run_id: str, token: str | None = None, *, retry: RetryOption = None) -> dict[str, Any]:
        """Ask the gateway to end the run with an `error` event of type `cancelled` (API key when keys are set).
        Idempotent on the gateway, so retried like every request."""
        params = {"token": token} if token else None
        path = f"/v1/runs/{run_id}/cancel"
        response = await self._request("POST", path, headers=self._key_headers(), params=params, retry=retry)
        return response.json() if response.content else {}


RuncastClient = AsyncClient
"""The name this client had before `runcast.AsyncClient`; kept for existing code."""
