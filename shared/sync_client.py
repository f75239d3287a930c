"""The blocking twin of `AsyncClient`, for scripts, notebooks and sync web handlers.

It drives the async client on a private event loop (`asyncio.Runner`) instead of re-implementing it over
`httpx.Client`: the reconnect/resume loop, backoff and error mapping exist once, so both clients behave the same.
The price is that a `Client` must not be used from inside a running event loop (use `AsyncClient` there), which
the constructor refuses with a clear error.

```python
with Client("http://127.0.0.1:8000") as client:
    run = client.create_run("echo", "Hello")
    for item in client.stream(run.run_id, run.token):
        print(item.id, item.type)
```
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

from runcast.shared.client import AsyncClient, RetryOption, RunHandle, RunStream, StreamItem


class Client:
    """Blocking client for one gateway; the same methods as `AsyncClient`, without `await`."""

    def __init__(self, base_url: str, api_key: str | None = None, **options: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("runcast.Client blocks; inside a running event loop use runcast.AsyncClient")
        self._async = AsyncClient(base_url, api_key, **options)  # httpx binds its pool to the loop on first use
        self._runner = asyncio.Runner()

    @property
    def base_url(self) -> str:
        """The gateway this client talks to."""
        return self._async.base_url

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections and the client's event loop."""
        try:
            self._runner.run(self._async.aclose())
        finally:
            self._runner.close()

    def agents(self, *, retry: RetryOption = None) -> list[dict[str, str]]:
        """The agents the workers serve: `[{"name": ..., "description": ...}]`."""
        return self._runner.run(self._async.agents(retry=retry))

    def create_run(
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
        """See `AsyncClient.create_run` (retried safely, with one `Idempotency-Key` per call)."""
        run = self._async.create_run(
            agent,
            input,
            metadata,
            conversation_id=conversation_id,
            messages=messages,
            external=external,
            idempotency_key=idempotency_key,
            retry=retry,
        )
        return self._runner.run(run)

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """See `AsyncClient.conversation`."""
        return self._runner.run(self._async.conversation(conversation_id))

    def stream(self, run_id: str, token: str, last_event_id: str | None = None, **retry: Any) -> SyncRunStream:
        """The run's events after `last_event_id` (from the start when None), until its terminal event; it
        reconnects and resumes by itself like `AsyncClient.stream`."""
        return SyncRunStream(self._runner, self._async.stream(run_id, token, last_event_id, **retry))

    def status(self, run_id: str, token: str, *, retry: RetryOption = None) -> dict[str, Any]:
        """The run's status and last event id."""
        return self._runner.run(self._async.status(run_id, token, retry=retry))

    def result(self, run_id: str, token: str, *, retry: RetryOption = None) -> dict[str, Any]:
        """The final StreamingBuffer; raises ConflictError while the run is still going."""
        return self._runner.run(self._async.result(run_id, token, retry=retry))

    def cancel(self, run_id: str, token: str | None = None, *, retry: RetryOption = None) -> dict[str, Any]:
        """End the run with an `error` event of type `cancelled` (API key when keys are set, else the token)."""
        return self._runner.run(self._async.cancel(run_id, token, retry=retry))


class SyncRunStream:
    """Iterates a `RunStream` on the client's loop; `last_event_id`, `reconnects` and `connections` read through."""

    def __init__(self, runner: asyncio.Runner, stream: RunStream) -> None:
        self._runner = runner
        self._stream = stream
        self._items: AsyncIterator[StreamItem] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> Iterator[StreamItem]:
        items = self._items = aiter(self._stream)
        try:
            while True:
                try:
                    yield self._runner.run(anext(items))
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(RuntimeError):  # the client (and its loop) may already be closed
                self._runner.run(items.aclose())  # type: ignore[attr-defined]
