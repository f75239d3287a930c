"""Frozen producers (real processes): a worker that stops for longer than RUNCAST_WORKER_LOST_S, then goes on.

Its heartbeat lapses, a gateway's sweeper ends the run with ERROR `worker_lost`, and every viewer gets that one
terminal event. When the worker wakes up in the middle of publishing, nothing is appended after `worker_lost`: its
job's watcher sees the run ended and stops the agent, and the run's log is fenced anyway (the append script refuses
anything after a terminal event). The same worker process then runs new runs.

- SIGSTOP/SIGCONT (a paused VM, a debugger, a long GC): on waking, the watcher usually stops the job before its next
  append leaves the process.
- The worker's Redis traffic held up in the network (a stalled link or partition): appends the worker sent while the
  run was live reach Redis after `worker_lost`, so the fence itself is what refuses them (counted).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from runcast.shared.keys import events_key
from tests.support.eventsource import ResumingViewer
from tests.support.faults import (
    as_log,
    assert_a_new_run_streams_cleanly,
    start_together,
    stored_log,
    wait_until,
    words,
)
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.proxy import SeveringProxy
from tests.support.sse import TERMINAL, create_run

pytestmark = pytest.mark.slow

LOST_S = 1.5
ENV = {"RUNCAST_WORKER_LOST_S": str(LOST_S)}


@pytest.fixture
def deployment(module_redis_url: str) -> Iterator[tuple[GatewayProcess, WorkerProcess]]:
    gateway, worker = GatewayProcess(module_redis_url, **ENV), WorkerProcess(module_redis_url, **ENV)
    start_together(gateway, worker)
    yield gateway, worker
    worker.signal(signal.SIGCONT)  # never leave a stopped process behind
    gateway.stop()
    worker.stop()


async def test_a_worker_frozen_past_the_lost_timeout_never_appends_after_worker_lost_and_keeps_working(
    module_redis_url: str, deployment: tuple[GatewayProcess, WorkerProcess], http: httpx.AsyncClient
):
    gateway, worker = deployment
    run = await create_run(http, gateway.url, "echo", words(400))  # 8 s if the worker were not stopped
    run_id = run["run_id"]
    viewers = [ResumingViewer([gateway.url], run_id, run["token"]) for _ in range(4)]
    tasks = [asyncio.create_task(v.run(http, timeout_s=60)) for v in viewers]
    await wait_until(lambda: all(len(v.received) >= 10 for v in viewers), 20, "viewers mid-stream")

    worker.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    await asyncio.gather(*tasks)  # released by the sweeper's worker_lost
    lost_after = time.monotonic() - frozen_at
    log = await stored_log(module_redis_url, run_id)
    assert log[-1][1] == "error" and log[-1][2]["data"]["error_type"] == "worker_lost"
    assert worker.alive(), "the worker is stopped, not dead"

    worker.signal(signal.SIGCONT)
    # The job wakes up mid-publish; its next append is refused by the fence and the job ends (arq logs `← <id>`).
    await wait_until(lambda: f"← {run_id}:run_agent" in worker.log(), 30, "the resumed job to finish")
    admin = redis.Redis.from_url(module_redis_url)
    entries = admin.xrange(events_key(run_id))
    admin.close()
    after = await stored_log(module_redis_url, run_id)
    assert len(entries) == len(log) and after == log, "nothing may be appended after the run's terminal event"
    assert after[-1][1] in TERMINAL and sum(t in TERMINAL for _, t, _ in after) == 1
    for viewer in viewers:
        assert as_log(viewer.received) == log, "every viewer sees the whole log and exactly one terminal event"
    late = ResumingViewer([gateway.url], run_id, run["token"])
    assert as_log(await late.run(http, timeout_s=30)) == log

    await assert_a_new_run_streams_cleanly(http, gateway.url, module_redis_url)
    assert worker.alive() and gateway.alive()
    print(
        f"\n[fault] worker SIGSTOP: worker_lost {lost_after:.2f}s after the freeze ({len(viewers)} viewers, one "
        f"terminal each); after SIGCONT {len(entries)} entries, none after worker_lost; the worker ran the next run"
    )


def script_calls(redis_url: str) -> int:
    admin = redis.Redis.from_url(redis_url)
    try:
        return int(admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        admin.close()


async def test_appends_held_up_in_the_network_past_worker_lost_are_refused_by_the_fence(
    module_redis_url: str, http: httpx.AsyncClient
):
    async with SeveringProxy(httpx.URL(module_redis_url).port) as link:  # the worker's only way to Redis
        gateway = GatewayProcess(module_redis_url, **ENV)
        worker = WorkerProcess(f"redis://127.0.0.1:{link.port}/0", **ENV)
        await asyncio.to_thread(start_together, gateway, worker)  # the proxy runs on this loop: do not block it
        try:
            run = await create_run(http, gateway.url, "echo", words(400))
            run_id = run["run_id"]
            viewers = [ResumingViewer([gateway.url], run_id, run["token"]) for _ in range(3)]
            tasks = [asyncio.create_task(v.run(http, timeout_s=60)) for v in viewers]
            await wait_until(lambda: all(len(v.received) >= 10 for v in viewers), 20, "viewers mid-stream")

            link.pause()  # the worker goes on producing; its next append (and heartbeat) wait in the network
            await asyncio.gather(*tasks)
            log = await stored_log(module_redis_url, run_id)
            assert log[-1][2]["data"]["error_type"] == "worker_lost"
            calls_before = script_calls(module_redis_url)

            link.resume()  # the held append reaches Redis after worker_lost
            await wait_until(lambda: f"← {run_id}:run_agent" in worker.log(), 30, "the worker's job to finish")
            refused = script_calls(module_redis_url) - calls_before
            assert refused >= 1, "an append held up in the network must have reached Redis after the terminal event"
            assert await stored_log(module_redis_url, run_id) == log, "the fence must refuse it: nothing after it"
            for viewer in viewers:
                assert as_log(viewer.received) == log

            await assert_a_new_run_streams_cleanly(http, gateway.url, module_redis_url)
            assert worker.alive() and gateway.alive()
            print(
                f"\n[fault] worker's Redis link stalled past worker_lost: {refused} late append(s) refused by the fence"
            )
        finally:
            link.resume()
            gateway.stop()
            await asyncio.to_thread(worker.stop)
