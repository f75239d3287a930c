"""A test viewer that behaves like a browser's EventSource: when its stream breaks (connection lost, gateway gone,
503, stream ended without a terminal event) it reconnects, to the next gateway in its list, with `Last-Event-ID`
set to the last id it received, until it sees the terminal event. It records everything it received."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from httpx_sse import aconnect_sse

from tests.support.sse import TERMINAL, Received

RETRYABLE_STATUS = {502, 503, 504}


@dataclass
class ResumingViewer:
    gateways: list[str]
    run_id: str
    token: str
    retry_s: float = 0.1
    drop_after: Callable[[], int | None] = lambda: None
    """How many events to read on the next connection before dropping it on purpose (None = never)."""
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    broken: int = 0
    """Connections that ended without the terminal event and not by our own choice (faults we rode through)."""
    dropped: int = 0
    """Connections we dropped on purpose (soak)."""
    outcomes: list[str] = field(default_factory=list)
    """How each connection ended: finished, dropped, `http 503`, `transport ...`, `ended without terminal event`."""
    _gateway: int = 0

    @property
    def last_id(self) -> str | None:
        return self.received[-1].id if self.received else None

    @property
    def finished(self) -> bool:
        return bool(self.received) and self.received[-1].event in TERMINAL

    async def run(self, client: httpx.AsyncClient, timeout_s: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while not self.finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"viewer of {self.run_id} unfinished after {timeout_s}s ({len(self.received)} ev)")
            outcome = await self._connect_once(client)
            self.outcomes.append(outcome)
            if outcome == "dropped":  # on purpose: come back at once, to the next gateway
                self.dropped += 1
                self._gateway = (self._gateway + 1) % len(self.gateways)
                continue
            if outcome != "finished":
                self.broken += 1
                self._gateway = (self._gateway + 1) % len(self.gateways)
                await asyncio.sleep(self.retry_s * (0.5 + random.random()))
        return self.received

    async def _connect_once(self, client: httpx.AsyncClient) -> str:
        self.connections += 1
        base = self.gateways[self._gateway]
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        limit = self.drop_after()
        got = 0
        try:
            async with aconnect_sse(
                client, "GET", f"{base}/v1/runs/{self.run_id}/events", params={"token": self.token}, headers=headers
            ) as source:
                status = source.response.status_code
                if status in RETRYABLE_STATUS:
                    return f"http {status}"
                source.response.raise_for_status()  # any other 4xx/5xx is a real failure of the test
                async for sse in source.aiter_sse():
                    if sse.event == "reset":
                        raise AssertionError(f"unexpected reset for {self.run_id}: {sse.data}")
                    self.received.append(Received(sse.id or None, sse.event, json.loads(sse.data)))
                    got += 1
                    if sse.event in TERMINAL:
                        return "finished"
                    if limit is not None and got >= limit:
                        return "dropped"
        except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
            return f"transport {type(exc).__name__}"
        return "ended without terminal event"
