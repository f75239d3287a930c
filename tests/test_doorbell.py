"""Starting queued runs at once: the gateway rings the queue's doorbell, a worker with a free slot waiting on it
starts the job; arq's regular poll still finds what no bell brought. Real Redis, real arq workers (in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from runcast.shared import doorbell
from runcast.shared.doorbell import doorbell_key, enqueue_and_ring, ring
from runcast.worker.resilient import ResilientWorker
from tests.support.faults import wait_until
from tests.support.sse import create_run
from tests.support.stack import running_stack

STARTED: list[tuple[str, str]] = []
RELEASE: asyncio.Event


async def note(ctx: dict[str, Any], tag: str) -> str:
    STARTED.append((ctx["name"], tag))
    return tag


async def hold(ctx: dict[str, Any], tag: str) -> str:
    STARTED.append((ctx["name"], tag))
    await RELEASE.wait()
    return tag


@pytest.fixture
async def queue(real_redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = ArqRedis.from_url(real_redis_url)
    yield pool
    await pool.aclose()


@pytest.fixture(autouse=True)
async def fresh_state() -> None:
    global RELEASE
    STARTED.clear()
    RELEASE = asyncio.Event()  # bound to this test's loop


@contextlib.asynccontextmanager
async def worker(queue: ArqRedis, queue_name: str, name: str, **options: Any) -> AsyncIterator[ResilientWorker]:
    """A doorbell worker on a pool of its own (arq's close() closes its pool)."""
    kwargs = queue.connection_pool.connection_kwargs
    own_pool = ArqRedis(host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0))
    arq_worker = ResilientWorker(
        functions=[note, hold],
        redis_pool=own_pool,
        queue_name=queue_name,
        handle_signals=False,
        ctx={"name": name},
        redis_retry_s=5,
        **options,
    )
    task = asyncio.create_task(arq_worker.async_run())
    try:
        await wait_until(lambda: arq_worker._polled_at > float("-inf"), 10, "the worker's first regular poll")
        yield arq_worker
    finally:
        RELEASE.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await arq_worker.close()


def own_queue() -> str:
    return f"runcast:test-bell:{uuid.uuid4().hex}"


async def enqueue(queue: ArqRedis, queue_name: str, function: str, tag: str, *, rung: bool = True) -> None:
    """Queue `function(tag)` under a job id of its own (arq's job and result keys are not per queue)."""
    job_id = f"{tag}-{uuid.uuid4().hex}"
    assert await queue.enqueue_job(function, tag, _job_id=job_id, _queue_name=queue_name) is not None
    if rung:
        await ring(queue, queue_name, job_id)


async def test_a_rung_job_starts_at_once_not_at_the_next_poll(queue: ArqRedis):
    name = own_queue()
    async with worker(queue, name, "a", poll_delay=60) as arq_worker:  # its next regular poll is a minute away
        await enqueue(queue, name, "note", "job-1")
        await wait_until(lambda: ("a", "job-1") in STARTED, 10, "the rung job to start (a poll would take 60 s)")
        assert arq_worker.bells == 1


async def test_a_job_whose_bell_was_missed_is_found_by_the_regular_poll(queue: ArqRedis):
    name = own_queue()
    async with worker(queue, name, "a", poll_delay=0.2) as arq_worker:
        await enqueue(queue, name, "note", "quiet", rung=False)
        await wait_until(lambda: ("a", "quiet") in STARTED, 10, "the regular poll to find the job")
        assert arq_worker.bells == 0


async def test_a_worker_without_a_free_slot_leaves_the_bell_to_another(queue: ArqRedis):
    name = own_queue()
    async with worker(queue, name, "full", poll_delay=60, max_jobs=1) as full:
        await enqueue(queue, name, "hold", "long")
        await wait_until(lambda: ("full", "long") in STARTED, 10, "the first worker to be busy")
        async with worker(queue, name, "free", poll_delay=60) as free:
            await enqueue(queue, name, "note", "next")
            await wait_until(lambda: ("free", "next") in STARTED, 10, "the worker with a free slot to take the bell")
            assert free.bells == 1 and full.bells == 1


async def test_racing_workers_run_every_rung_job_exactly_once(queue: ArqRedis):
    name = own_queue()
    async with worker(queue, name, "a", poll_delay=0.3), worker(queue, name, "b", poll_delay=0.3):
        tags = [f"job-{i}" for i in range(30)]
        for tag in tags:
            await enqueue(queue, name, "note", tag)
        await wait_until(lambda: len(STARTED) >= len(tags), 10, "every job to start")
        await asyncio.sleep(0.7)  # two more regular polls each: nothing may start twice
    assert sorted(tag for _, tag in STARTED) == sorted(tags)


async def test_the_regular_poll_leaves_a_job_running_elsewhere_alone_for_a_while(queue: ArqRedis):
    name = own_queue()
    async with worker(queue, name, "busy", poll_delay=60):
        await enqueue(queue, name, "hold", "long")
        await wait_until(lambda: ("busy", "long") in STARTED, 10, "the job to run on the first worker")
        async with worker(queue, name, "other", poll_delay=0.1) as other:
            claimed: list[list[bytes]] = []
            real_claim = other._claim

            async def spy(job_ids: list[bytes]) -> list[Any]:
                claimed.append(list(job_ids))
                return await real_claim(job_ids)

            other._claim = spy  # type: ignore[method-assign]
            await asyncio.sleep(1.0)  # ~10 regular polls, each of which sees the due job
    assert sum(any(job_id.startswith(b"long-") for job_id in ids) for ids in claimed) <= 1
    assert ("other", "long") not in STARTED


async def test_the_doorbell_list_is_capped(queue: ArqRedis, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(doorbell, "DOORBELL_MAX", 5)
    name = own_queue()
    for i in range(12):
        await ring(queue, name, f"job-{i}")
    assert await queue.lrange(doorbell_key(name), 0, -1) == [f"job-{i}".encode() for i in range(7, 12)]


async def test_creating_a_run_rings_the_doorbell_with_its_id(real_redis_url: str, http: httpx.AsyncClient):
    name = own_queue()
    async with running_stack(real_redis_url, worker=False, queue_name=name) as stack:
        run = await create_run(http, stack.url, "echo", "hello")
        assert await stack.redis.lrange(doorbell_key(name), 0, -1) == [run["run_id"]]


async def test_a_job_enqueued_with_its_bell_is_an_ordinary_arq_job(queue: ArqRedis):
    name = own_queue()
    job_id = f"one-{uuid.uuid4().hex}"
    assert await enqueue_and_ring(queue, name, "note", job_id, "payload")
    assert not await enqueue_and_ring(queue, name, "note", job_id, "again")  # one job per id, as arq's enqueue_job
    job = Job(job_id, queue, _queue_name=name)
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None and (info.function, info.args) == ("note", ("payload",))
    assert await queue.lrange(doorbell_key(name), 0, -1) == [job_id.encode()]
    await queue.delete(doorbell_key(name))
    async with worker(queue, name, "a", poll_delay=60) as arq_worker:
        assert await job.result(timeout=10, poll_delay=0.05) == "payload"  # found by the worker's first poll
        rung = f"two-{uuid.uuid4().hex}"
        assert await enqueue_and_ring(queue, name, "note", rung, "rung")
        assert await Job(rung, queue, _queue_name=name).result(timeout=10, poll_delay=0.05) == "rung"
        assert arq_worker.bells == 1
