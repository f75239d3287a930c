"""Run load processes: each creates its share of runs over raw HTTP at once and follows each with V SSE viewers.

A run's clock starts when its `POST /v1/runs` is written to the socket; its viewers connect as soon as the reply
(run id + token) is in. Each viewer (a `bench.loadgen.Viewer`: raw socket, httptools, ids must strictly increase)
records the receive time of the run's first `chunk` (time to first chunk = that - POST), of its terminal event
(run length = that - POST) and every event's publish -> receive latency
(receive wall time - the event JSON's `timestamp`, set when the agent produced the event) in a `Histogram`.

Conversation with the coordinator (`bench.fleet.ProcessFleet`): `("go",)` -> create the runs, connect the viewers,
answer `("created", run_ids, failures)`; `("wait", limit_s)` -> answer `("done", viewers_still_open)` once every
viewer has its terminal event (or at the limit); `("finish", expected)` -> verify every viewer against the run's
log as read from Redis, answer `("result", {...})` and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench.histogram import Histogram
from bench.loadgen import TERMINAL, Viewer, pipe_reader, published_at, raise_nofile_limit, verdicts

TTFC_BUCKET_S = 0.0005


class RunViewer(Viewer):
    """A viewer that also times the run it follows from the POST that created it."""

    def __init__(self, load: RunLoad, run_id: str, request: bytes, posted_at: float) -> None:
        super().__init__(load, run_id, request)  # type: ignore[arg-type]
        self.posted_at = posted_at
        self.first_chunk_at = 0.0
        self.ended_at = 0.0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.finished.done():
            self.finished.set_result(None)

    def observe(self, event_type: bytes, data: bytes) -> None:
        now = self.now
        self.load.latency.add(now - published_at(data))  # type: ignore[attr-defined]
        if event_type == b"chunk" and not self.first_chunk_at:
            self.first_chunk_at = now
        elif event_type in TERMINAL:
            self.ended_at = now


class RunLoad:
    """The runs and viewers of one load process."""

    def __init__(
        self, conn: Connection, host: str, port: int, runs: int, viewers: int, body: bytes, gate: int, sequential: bool
    ) -> None:
        self.conn = conn
        self.sequential = sequential
        self.host = host
        self.port = port
        self.runs = runs
        self.viewers_per_run = viewers
        self.body = body
        self.gate = asyncio.Semaphore(gate)
        self.viewers: list[RunViewer] = []
        self.latency = Histogram()
        self.pings = 0
        self.open = 0
        self.all_finished = asyncio.Event()
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.failures: Counter[str] = Counter()

    # what Viewer expects of its load
    def viewer_finished(self) -> None:
        self.open -= 1
        if self.open <= 0:
            self.all_finished.set()

    def record(self, phase: bytes, now: float, latency: float) -> None:  # pragma: no cover - RunViewer.observe
        self.latency.add(latency)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=pipe_reader, args=(self.conn, loop, self.inbox), daemon=True).start()
        self.conn.send(("ready",))
        while True:
            message = await self.inbox.get()
            if message[0] == "go":
                run_ids = await self.create_all()
                self.conn.send(("created", run_ids, dict(self.failures.most_common(5))))
            elif message[0] == "wait":
                if self.open > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.all_finished.wait(), message[1])
                self.conn.send(("done", max(self.open, 0), time.process_time()))
            elif message[0] == "finish":
                self.conn.send(("result", self.report(message[1])))
                self.close_all()
                return
            else:
                self.close_all()
                return

    async def create_all(self) -> list[str]:
        self.open = self.runs * self.viewers_per_run
        if self.open == 0:
            self.all_finished.set()
        if not self.sequential:
            created = await asyncio.gather(*(self.create_one() for _ in range(self.runs)))
            return [run_id for run_id in created if run_id is not None]
        run_ids = []  # one at a time: the next run is created once every viewer of the previous one has finished
        for _ in range(self.runs):
            run_id = await self.create_one()
            if run_id is not None:
                run_ids.append(run_id)
            pending = [v.finished for v in self.viewers if not v.done and v.failure is None]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), 60)
        return run_ids

    async def create_one(self) -> str | None:
        async with self.gate:
            posted_at = time.time()
            try:
                reply = await asyncio.wait_for(self.post(), 60)
            except (OSError, TimeoutError, ValueError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"[:120]}
        if "run_id" not in reply:
            self.failures[str(reply.get("error") or reply)[:120]] += 1
            for _ in range(self.viewers_per_run):
                self.viewer_finished()
            return None
        run_id, token = reply["run_id"], reply["token"]
        request = (
            f"GET /v1/runs/{run_id}/events?token={token} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        await asyncio.gather(*(self.follow(run_id, request, posted_at) for _ in range(self.viewers_per_run)))
        return run_id

    async def post(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                b"POST /v1/runs HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (self.host.encode(), self.port, len(self.body), self.body)
            )
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 202:
            return {"error": f"HTTP {status}: {body[:100].decode(errors='replace')}"}
        return json.loads(body)

    async def follow(self, run_id: str, request: bytes, posted_at: float) -> None:
        loop = asyncio.get_running_loop()
        viewer = RunViewer(self, run_id, request, posted_at)
        self.viewers.append(viewer)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: viewer, self.host, self.port), timeout=30)
        except (OSError, TimeoutError) as exc:
            viewer.fail(f"connect: {type(exc).__name__}: {exc}"[:120])

    def report(self, expected: dict[str, tuple[int, int]]) -> dict[str, Any]:
        complete, reasons = verdicts(self.viewers, expected)  # type: ignore[arg-type]
        ttfc, length = Histogram(), Histogram()
        for viewer in self.viewers:
            if viewer.first_chunk_at:
                ttfc.add(viewer.first_chunk_at - viewer.posted_at)
            if viewer.ended_at:
                length.add(viewer.ended_at - viewer.posted_at)
        return {
            "viewers": len(self.viewers),
            "complete": complete,
            "problems": dict(reasons.most_common(5)),
            "create_failures": dict(self.failures.most_common(5)),
            "ttfc": ttfc.to_wire(),
            "run_length": length.to_wire(),
            "latency": self.latency.to_wire(),
            "cpu_s": time.process_time(),
        }

    def close_all(self) -> None:
        for viewer in self.viewers:
            if viewer.transport is not None and not viewer.transport.is_closing():
                viewer.transport.close()


def runs_main(
    conn: Connection, host: str, port: int, runs: int, viewers: int, body: bytes, gate: int, sequential: bool
) -> None:
    """Entry point of a run load process (multiprocessing `spawn`)."""
    raise_nofile_limit()
    load = RunLoad(conn, host, port, runs, viewers, body, gate, sequential)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(load.run())
        else:
            uvloop.run(load.run())
