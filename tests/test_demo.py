"""`runcast demo` needs no Redis at all; the in-process stack gives the same stream as separate processes."""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import Process
from tests.support.sse import create_run, read_sse
from tests.support.stack import Stack


@pytest.fixture
def demo_process():
    port = free_port()
    # No PATH (so no redis-server to find) and a Redis URL where nothing listens: only fakeredis can serve.
    env = {"PATH": "", "RUNCAST_REDIS_URL": "redis://127.0.0.1:1/0", "RUNCAST_SCRIPTED_DELAY_MS": "1"}
    proc = Process([sys.executable, "-m", "runcast.cli", "demo", "--port", str(port)], env).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
        assert proc.alive(), proc.log()
    yield f"http://127.0.0.1:{port}"
    proc.stop()


async def test_demo_starts_without_redis_and_streams_an_echo_run(demo_process: str, http: httpx.AsyncClient):
    page = await http.get(demo_process + "/")
    assert page.status_code == 200 and "EventSource" in page.text
    run = await create_run(http, demo_process, "echo", "no redis here")
    events = await read_sse(http, demo_process, run["run_id"], run["token"])
    assert [e.event for e in events][-1] == "complete"
    assert "".join(e.delta for e in events if e.event == "chunk") == "no redis here"


async def test_in_process_stack_streams_and_resumes(stack: Stack, http: httpx.AsyncClient):
    """Runs on the real Redis, or on fakeredis (with a loud notice) where no redis-server exists."""
    run = await create_run(http, stack.url, "echo", "alpha beta gamma delta")
    whole = await read_sse(http, stack.url, run["run_id"], run["token"])
    first = await read_sse(http, stack.url, run["run_id"], run["token"], limit=3)
    rest = await read_sse(http, stack.url, run["run_id"], run["token"], last_event_id=first[-1].id)
    assert first + rest == whole
    assert whole[-1].data["type"] == "complete"
