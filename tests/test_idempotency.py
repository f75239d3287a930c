"""`Idempotency-Key` on `POST /v1/runs` (in-process gateway and worker on a real Redis): a retried create returns
the run the first attempt made, finishes what a failed first attempt left undone, and never runs an agent twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from runcast.gateway.guards import idempotency
from runcast.gateway.schemas import CreateRunRequest
from runcast.shared.ids import new_run_id
from runcast.shared.streamlog import StreamLog
from tests.support.sse import read_sse
from tests.support.stack import Stack, running_stack

BODY = {"agent": "echo", "input": "once only"}


@pytest.fixture
async def keyed_stack(real_redis_url: str) -> AsyncIterator[Stack]:
    async with running_stack(real_redis_url, api_keys=["key-a", "key-b"], create_rate_limit=0) as running:
        yield running


def auth(key: str = "key-a", idem: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"Idempotency-Key": idem} if idem else {})}


async def starts(http: httpx.AsyncClient, stack: Stack, run: dict) -> int:
    events = await read_sse(http, stack.url, run["run_id"], run["token"])
    assert events[-1].event == "complete"
    return sum(e.event == "start" for e in events)


async def test_a_create_retried_with_the_same_key_returns_the_same_run_and_runs_it_once(
    keyed_stack: Stack, http: httpx.AsyncClient
):
    url = f"{keyed_stack.url}/v1/runs"
    first = await http.post(url, json=BODY, headers=auth(idem="k-1"))
    again = await http.post(url, json=BODY, headers=auth(idem="k-1"))
    assert first.status_code == again.status_code == 202
    assert again.json()["run_id"] == first.json()["run_id"]
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert await starts(http, keyed_stack, again.json()) == 1
    other = await http.post(url, json=BODY, headers=auth(idem="k-2"))
    assert other.json()["run_id"] != first.json()["run_id"], "a new key is a new run"


async def test_concurrent_creates_with_one_key_make_one_run(keyed_stack: Stack, http: httpx.AsyncClient):
    url = f"{keyed_stack.url}/v1/runs"
    answers = await asyncio.gather(*(http.post(url, json=BODY, headers=auth(idem="burst")) for _ in range(6)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert await starts(http, keyed_stack, answers[0].json()) == 1


async def test_a_replay_finishes_a_first_attempt_that_died_before_queueing_the_run(
    keyed_stack: Stack, http: httpx.AsyncClient
):
    """The first attempt bound the key and stored the run, then lost Redis before enqueueing it (the client got a
    503): the retry must start that run, not a second one, and not leave it queued for ever."""
    run_id = new_run_id()
    conf = keyed_stack.settings
    body = CreateRunRequest(**BODY)
    bound = await idempotency.claim(keyed_stack.redis, "half-done", "Bearer key-a", body, run_id, conf.retention_s)
    assert not bound.replayed
    assert await StreamLog(keyed_stack.redis).create_run(run_id, "echo", BODY["input"])  # ... and no enqueue
    retry = await http.post(f"{keyed_stack.url}/v1/runs", json=BODY, headers=auth(idem="half-done"))
    assert retry.status_code == 202 and retry.json()["run_id"] == run_id
    assert await starts(http, keyed_stack, retry.json()) == 1


async def test_a_key_reused_for_another_request_is_refused(keyed_stack: Stack, http: httpx.AsyncClient):
    url = f"{keyed_stack.url}/v1/runs"
    assert (await http.post(url, json=BODY, headers=auth(idem="k-3"))).status_code == 202
    changed = await http.post(url, json={**BODY, "input": "something else"}, headers=auth(idem="k-3"))
    assert changed.status_code == 422 and "different request" in changed.json()["detail"]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "tab\there", "é"])
async def test_a_malformed_key_is_a_400(keyed_stack: Stack, http: httpx.AsyncClient, bad: str):
    headers: dict[str, str | bytes] = {**auth(), "Idempotency-Key": bad.encode()}  # raw bytes: é is not ASCII
    answer = await http.post(f"{keyed_stack.url}/v1/runs", json=BODY, headers=headers)
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json()["detail"]


async def test_keys_are_scoped_by_api_key(keyed_stack: Stack, http: httpx.AsyncClient):
    url = f"{keyed_stack.url}/v1/runs"
    a = await http.post(url, json=BODY, headers=auth("key-a", "shared-name"))
    b = await http.post(url, json=BODY, headers=auth("key-b", "shared-name"))
    assert a.json()["run_id"] != b.json()["run_id"] and "idempotent-replayed" not in b.headers


async def test_an_existing_run_is_never_reset_by_a_create(keyed_stack: Stack):
    log = StreamLog(keyed_stack.redis)
    run_id = new_run_id()
    assert await log.create_run(run_id, "echo", "first")
    await log.set_status(run_id, "running")
    assert not await log.create_run(run_id, "echo", "second")
    meta = await log.get_meta(run_id)
    assert meta is not None and meta["status"] == "running" and meta["input"] == "first"
