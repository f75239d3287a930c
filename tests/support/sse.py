"""A test-side SSE reader built on httpx-sse: returns what a viewer received, stopping at the terminal event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

TERMINAL = {"complete", "error"}


@dataclass(frozen=True)
class Received:
    id: str | None
    event: str
    data: dict[str, Any]

    @property
    def delta(self) -> str:
        return self.data["data"]["delta"]


async def dispatched(source: EventSource) -> AsyncIterator[ServerSentEvent]:
    """The events a browser's EventSource would fire. httpx-sse also yields a frame with no `data:` line (such as the
    gateway's opening `retry: 1000`); the SSE spec does not dispatch those."""
    async for sse in source.aiter_sse():
        if sse.data:
            yield sse


async def read_sse(
    client: httpx.AsyncClient,
    base_url: str,
    run_id: str,
    token: str,
    *,
    last_event_id: str | None = None,
    limit: int | None = None,
    resume_via: str = "header",
) -> list[Received]:
    """Read a run's events (at most `limit`, then disconnect), resuming after `last_event_id`."""
    headers, params = {}, {"token": token}
    if last_event_id is not None:
        if resume_via == "header":
            headers["Last-Event-ID"] = last_event_id
        else:
            params["last_event_id"] = last_event_id
    received: list[Received] = []
    if limit == 0:
        return received
    url = f"{base_url}/v1/runs/{run_id}/events"
    async with aconnect_sse(client, "GET", url, params=params, headers=headers) as source:
        source.response.raise_for_status()
        async for sse in dispatched(source):
            received.append(Received(sse.id or None, sse.event, json.loads(sse.data)))
            if sse.event in TERMINAL or (limit is not None and len(received) >= limit):
                break
    return received


async def create_run(client: httpx.AsyncClient, base_url: str, agent: str, text: str, **extra: Any) -> dict:
    response = await client.post(f"{base_url}/v1/runs", json={"agent": agent, "input": text, **extra})
    assert response.status_code == 202, response.text
    return response.json()
