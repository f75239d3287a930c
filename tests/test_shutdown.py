"""Graceful shutdown (real processes, real Redis).

- SIGTERM on a gateway: its SSE streams end at once without a terminal event, the process exits promptly (not
  when the watched runs end), and the viewers resume on another gateway with exactly the rest.
- SIGTERM on a worker: running agents get RUNCAST_JOB_COMPLETION_WAIT_S to finish; those still running then end
  with ERROR `worker_shutdown`; arq re-queues the cancelled job and the next worker refuses to run it again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
import redis
import websockets

from tests.support.eventsource import ResumingViewer
from tests.support.faults import as_log, assert_clean_run, start_together, stored_log, wait_until, words
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.sse import create_run

pytestmark = pytest.mark.slow

GRACE_S = 1


async def test_gateway_sigterm_ends_streams_promptly_and_viewers_resume_elsewhere(
    module_redis_url: str, gateway_proc: GatewayProcess, http: httpx.AsyncClient
):
    worker, leaving = WorkerProcess(module_redis_url), GatewayProcess(module_redis_url, RUNCAST_SHUTDOWN_GRACE_S="3")
    start_together(worker, leaving)
    try:
        text = words(100)  # 2 s: far longer than the shutdown may take
        run = await create_run(http, gateway_proc.url, "echo", text)
        viewers = [ResumingViewer([leaving.url, gateway_proc.url], run["run_id"], run["token"]) for _ in range(10)]
        tasks = [asyncio.create_task(v.run(http, timeout_s=30)) for v in viewers]
        ws_messages: list[dict] = []
        ws_closed = asyncio.create_task(ws_viewer(leaving, run, ws_messages))
        await wait_until(lambda: all(len(v.received) >= 3 for v in viewers), 15, "viewers mid-stream")
        await wait_until(lambda: len(ws_messages) >= 3, 15, "the WebSocket viewer mid-stream")

        leaving.signal(signal.SIGTERM)
        asked = time.monotonic()
        exit_code = await asyncio.to_thread(leaving.wait, 15)
        took = time.monotonic() - asked
        status = (await http.get(run["status_url"], params={"token": run["token"]})).json()["status"]
        await asyncio.gather(*tasks)
        ws_close_code = await ws_closed
    finally:
        leaving.stop()
        worker.stop()

    assert exit_code in (0, -signal.SIGTERM), leaving.log()  # uvicorn re-raises the signal after a clean shutdown
    assert "ASGI callable returned without completing response" not in leaving.log()
    assert status == "running", "the gateway must exit before the run it was streaming ends"
    assert took < 5, f"gateway took {took:.1f}s to exit"
    log = await stored_log(module_redis_url, run["run_id"])
    assert_clean_run(log, text)
    for viewer in viewers:
        assert "ended without terminal event" in viewer.outcomes, viewer.outcomes  # a clean end, not a cut
        assert viewer.received[-1].event == "complete"
        assert as_log(viewer.received) == log
    assert ws_messages[-1]["event"]["type"] not in ("complete", "error")
    assert ws_close_code in (1001, 1012), ws_close_code  # going away / service restart: reconnect elsewhere
    print(f"\n[fault] gateway SIGTERM: WebSocket viewer closed with {ws_close_code}")
    print(f"\n[fault] gateway SIGTERM: exited in {took:.2f}s, {len(viewers)} viewers resumed elsewhere, exact")


async def ws_viewer(gateway: GatewayProcess, run: dict, messages: list[dict]) -> int | None:
    """A WebSocket viewer on the gateway being stopped: the close code it gets."""
    url = f"{gateway.url.replace('http', 'ws', 1)}/v1/runs/{run['run_id']}/ws?token={run['token']}"
    async with websockets.connect(url) as ws:
        try:
            async for message in ws:
                messages.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        return ws.close_code


async def test_worker_sigterm_finishes_short_runs_and_ends_long_ones_with_worker_shutdown(
    module_redis_url: str, gateway_proc: GatewayProcess, http: httpx.AsyncClient
):
    worker = WorkerProcess(module_redis_url, RUNCAST_JOB_COMPLETION_WAIT_S=str(GRACE_S)).start()
    try:
        short_text, long_text = words(20), words(400)  # 0.4 s (inside the grace) and 8 s (beyond it)
        long_run = await create_run(http, gateway_proc.url, "echo", long_text)
        short_run = await create_run(http, gateway_proc.url, "echo", short_text)
        viewers = [ResumingViewer([gateway_proc.url], r["run_id"], r["token"]) for r in (long_run, short_run)]
        tasks = [asyncio.create_task(v.run(http, timeout_s=30)) for v in viewers]
        await wait_until(lambda: all(len(v.received) >= 2 for v in viewers), 15, "both runs started")

        worker.signal(signal.SIGTERM)
        asked = time.monotonic()
        await asyncio.gather(*tasks)
        ended_after = time.monotonic() - asked
        exit_code = await asyncio.to_thread(worker.wait, 15)
    finally:
        worker.stop()
    assert exit_code is not None, "the worker did not exit after its grace period"

    assert_clean_run(await stored_log(module_redis_url, short_run["run_id"]), short_text)
    long_log = await stored_log(module_redis_url, long_run["run_id"])
    assert long_log[-1][1] == "error" and long_log[-1][2]["data"]["error_type"] == "worker_shutdown"
    assert sum(t in ("complete", "error") for _, t, _ in long_log) == 1
    assert GRACE_S <= ended_after < GRACE_S + 5
    assert as_log(viewers[0].received) == long_log

    # arq re-queued the job it cancelled; the next worker must not run the agent again on top of it
    admin = redis.Redis.from_url(module_redis_url)
    next_worker = WorkerProcess(module_redis_url).start()
    try:
        await wait_until(lambda: admin.exists(f"arq:result:{long_run['run_id']}") == 1, 15, "the retried job")
    finally:
        next_worker.stop()
        admin.close()
    assert await stored_log(module_redis_url, long_run["run_id"]) == long_log
    print(f"\n[fault] worker SIGTERM: long run ended with worker_shutdown {ended_after:.2f}s after the signal")
