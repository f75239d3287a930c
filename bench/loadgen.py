"""Viewer load processes: thousands of SSE viewers over raw sockets in one asyncio loop per process.

Each viewer is an `asyncio.Protocol` with an `httptools` response parser (it de-chunks the body in C), so a viewer
costs a socket and a small object, not an httpx client. A viewer parses only what it needs from each SSE frame:
the `id:` (entry ids must strictly increase; their sum is compared with the publisher's), the `event:` type, and from
the compact event JSON the top-level `timestamp` (publish time) and `trace_id` (the benchmark phase). Latency is
receive wall time minus publish time, for every event (no sampling), bucketed in a `Histogram`.

The coordinator drives a load process over a `multiprocessing` Pipe: it connects its viewers at start and answers
`connected`; then `progress` (how many viewers are still short of a target count per run, plus CPU time) and
`finish` (wait for every viewer's terminal event, verify each viewer against the publisher's tally, report, exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httptools

from bench.histogram import Histogram

TERMINAL = (b"complete", b"error")


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's file-descriptor soft limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def entry_int(entry_id: bytes) -> int:
    """A stream entry id `ms-seq` as one int that orders like the id (seq stays far below 2**20 per ms)."""
    ms, _, seq = entry_id.partition(b"-")
    return (int(ms) << 20) | int(seq)


def published_at(data: bytes) -> float:
    """The event's `timestamp` (wall time it was produced) from its compact JSON, without decoding the JSON."""
    at = data.rfind(b'"timestamp":') + 12
    return float(data[at : data.index(b",", at)])


def pipe_reader(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[tuple[Any, ...]]) -> None:
    """Thread body: forward the coordinator's messages into the loop's inbox until `exit`/`finish` (or EOF)."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = ("exit",)
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if message[0] in ("exit", "finish"):
            return


@dataclass
class PhaseStats:
    count: int = 0
    hist: Histogram = field(default_factory=Histogram)
    first_recv: float = 0.0
    last_recv: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "hist": self.hist.to_wire(),
            "first_recv": self.first_recv,
            "last_recv": self.last_recv,
        }


class Viewer(asyncio.Protocol):
    """One SSE subscriber: counts events, checks entry ids strictly increase, records publish->receive latency."""

    def __init__(self, load: LoadRunner, run_id: str, request: bytes) -> None:
        self.load = load
        self.run_id = run_id
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.buf = b""
        self.now = 0.0
        self.count = 0
        self.last_key = -1
        self.checksum = 0
        self.order_errors = 0
        self.resets = 0
        self.done = False
        self.failure: str | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.now = time.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(f"bad HTTP from gateway: {exc}")
        except (ValueError, IndexError) as exc:  # a frame without a proper id or event JSON
            self.fail(f"unparseable SSE frame: {exc}"[:120])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.fail(f"connection lost before the terminal event ({type(exc).__name__ if exc else 'EOF'})")

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status == 200 and not self.ready.done():
            self.ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.status != 200:
            self.buf = (self.buf + body)[:300]
            return
        buf = self.buf + body if self.buf else body
        start = 0
        while not self.done:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self.frame(buf[start:end])
            start = end + 2
        self.buf = buf[start:]

    def on_message_complete(self) -> None:
        if self.status != 200:
            self.fail(f"HTTP {self.status}: {self.buf.decode(errors='replace')[:120]}")
        elif not self.done:
            self.fail("response ended before the terminal event")

    def frame(self, frame: bytes) -> None:
        if frame[:1] == b":":  # heartbeat comment
            self.load.pings += 1
            return
        entry_id = event_type = data = b""
        for line in frame.split(b"\n"):
            if line[:6] == b"data: ":
                data = line[6:]
            elif line[:4] == b"id: ":
                entry_id = line[4:]
            elif line[:7] == b"event: ":
                event_type = line[7:]
        if not data:  # e.g. the opening `retry: 1000`: no data line, no event (SSE spec)
            return
        if event_type == b"reset":
            self.resets += 1
            return
        key = entry_int(entry_id)
        if key <= self.last_key:
            self.order_errors += 1
        self.last_key = key
        self.checksum += key
        self.count += 1
        self.observe(event_type, data)
        if event_type in TERMINAL:
            self.done = True
            self.load.viewer_finished()
            if self.transport is not None:
                self.transport.close()

    def observe(self, event_type: bytes, data: bytes) -> None:
        """Record one event's publish -> receive latency under its phase (the event JSON's `trace_id`)."""
        phase = data[data.rfind(b'"trace_id":') + 11 : -1]
        self.load.record(phase, self.now, self.now - published_at(data))

    def fail(self, reason: str) -> None:
        if self.failure is None and not self.done:
            self.failure = reason
            self.load.viewer_finished()
        if not self.ready.done():
            self.ready.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def verdict(self, expected: tuple[int, int] | None) -> str | None:
        """None when this viewer got exactly the run's events in order, else why not."""
        if self.failure is not None:
            return self.failure
        if expected is None:
            return "no publisher tally for this run"
        count, checksum = expected
        if self.order_errors:
            return "entry ids not strictly increasing (duplicate or reorder)"
        if self.resets:
            return "got a reset (trimmed backlog)"
        if self.count != count:
            return f"received {self.count} of {count} events"
        if self.checksum != checksum:
            return "received a different set of entry ids than published"
        if not self.done:
            return "no terminal event"
        return None


def verdicts(viewers: list[Viewer], expected: dict[str, tuple[int, int]]) -> tuple[int, Counter[str]]:
    """How many viewers got exactly their run's events, and why the others did not."""
    reasons: Counter[str] = Counter()
    complete = 0
    for viewer in viewers:
        reason = viewer.verdict(expected.get(viewer.run_id))
        if reason is None:
            complete += 1
        else:
            reasons[reason] += 1
    return complete, reasons


class LoadRunner:
    """The viewers of one load process and the command loop that reports on them."""

    def __init__(self, conn: Connection, host: str, port: int, viewers: list[tuple[str, str]], concurrency: int):
        self.conn = conn
        self.host = host
        self.port = port
        self.specs = viewers
        self.concurrency = concurrency
        self.viewers: list[Viewer] = []
        self.phases: dict[bytes, PhaseStats] = {}
        self.pings = 0
        self.open = 0
        self.all_finished = asyncio.Event()
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def record(self, phase: bytes, now: float, latency: float) -> None:
        stats = self.phases.get(phase)
        if stats is None:
            stats = self.phases[phase] = PhaseStats(first_recv=now)
        stats.count += 1
        stats.hist.add(latency)
        stats.last_recv = now

    def viewer_finished(self) -> None:
        self.open -= 1
        if self.open <= 0:
            self.all_finished.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=pipe_reader, args=(self.conn, loop, self.inbox), daemon=True).start()
        connected, errors = await self.connect_all()
        self.conn.send(("connected", connected, len(self.specs) - connected, dict(errors.most_common(5))))
        while True:
            message = await self.inbox.get()
            if message[0] == "progress":
                self.conn.send(("progress", self.behind(message[1]), time.process_time()))
            elif message[0] == "finish":
                self.conn.send(("result", await self.finish(message[1], message[2])))
                return
            else:  # "exit", or the coordinator went away
                self.close_all()
                return

    async def connect_all(self) -> tuple[int, Counter[str]]:
        """Open every viewer's stream, at most `concurrency` handshakes in flight (the listen backlog is finite)."""
        gate = asyncio.Semaphore(self.concurrency)
        errors: Counter[str] = Counter()
        loop = asyncio.get_running_loop()

        async def connect(run_id: str, token: str) -> bool:
            request = (
                f"GET /v1/runs/{run_id}/events?token={token} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
            ).encode()
            viewer = Viewer(self, run_id, request)
            self.viewers.append(viewer)
            self.open += 1
            async with gate:
                try:
                    await asyncio.wait_for(loop.create_connection(lambda: viewer, self.host, self.port), timeout=30)
                    await asyncio.wait_for(asyncio.shield(viewer.ready), timeout=30)
                except (OSError, TimeoutError) as exc:
                    viewer.fail(f"connect: {type(exc).__name__}: {exc}"[:120])
            if viewer.failure is not None:
                errors[viewer.failure] += 1
                return False
            return True

        results = await asyncio.gather(*(connect(run_id, token) for run_id, token in self.specs))
        return sum(results), errors

    def behind(self, targets: dict[str, int]) -> int:
        """Viewers still receiving that have fewer events than their run's target."""
        return sum(
            1
            for viewer in self.viewers
            if viewer.failure is None and not viewer.done and viewer.count < targets.get(viewer.run_id, 0)
        )

    async def finish(self, expected: dict[str, tuple[int, int]], limit_s: float) -> dict[str, Any]:
        if self.open > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_finished.wait(), limit_s)
        self.close_all()
        complete, reasons = verdicts(self.viewers, expected)
        return {
            "viewers": len(self.viewers),
            "complete": complete,
            "problems": dict(reasons.most_common(5)),
            "order_errors": sum(v.order_errors for v in self.viewers),
            "resets": sum(v.resets for v in self.viewers),
            "pings": self.pings,
            "phases": {phase.decode().strip('"'): stats.to_wire() for phase, stats in self.phases.items()},
            "cpu_s": time.process_time(),
        }

    def close_all(self) -> None:
        for viewer in self.viewers:
            if viewer.transport is not None and not viewer.transport.is_closing():
                viewer.transport.close()


def load_main(conn: Connection, host: str, port: int, viewers: list[tuple[str, str]], concurrency: int) -> None:
    """Entry point of a load process (multiprocessing `spawn`)."""
    raise_nofile_limit()
    runner = LoadRunner(conn, host, port, viewers, concurrency)
    with contextlib.suppress(KeyboardInterrupt):  # the coordinator handles Ctrl-C and kills us
        try:
            import uvloop
        except ImportError:  # uvicorn[standard] brings it; plain asyncio works too, only slower
            asyncio.run(runner.run())
        else:
            uvloop.run(runner.run())
