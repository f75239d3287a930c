"""The Python client backs off on 503, 429 and refused connections, honours `Retry-After`, and gives up with a typed
error when its budget is spent. The waits are checked as recorded values (the policy's `sleep` and the client's
`on_retry` hook), never by timing, against a real gateway process whose viewer cap answers 503 and whose create
rate limit answers 429."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from runcast.shared.client import AsyncClient, GatewayUnavailable, RateLimited, RetryPolicy
from runcast.shared.retry import parse_retry_after
from tests.support.eventsource import ResumingViewer
from tests.support.faults import wait_until, words
from tests.support.processes import LIMITED_API_KEY, GatewayProcess
from tests.support.proxy import SeveringProxy

KEY = LIMITED_API_KEY


class Waits:
    """Records every wait a client makes: (failures, delay, status, retry_after)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float, int | None, float | None]] = []

    def __call__(self, failures: int, delay: float, exc: Exception) -> None:
        self.seen.append((failures, delay, getattr(exc, "status_code", None), getattr(exc, "retry_after", None)))

    @property
    def delays(self) -> list[float]:
        return [delay for _, delay, _, _ in self.seen]


async def no_sleep(_: float) -> None:
    """For budget tests: the recorded delays are what matters, not waiting them out."""


# -- the policy itself ----------------------------------------------------------------------------------------------


def test_retry_after_is_a_floor_and_clients_told_the_same_value_spread_over_half_of_it_again():
    policy = RetryPolicy(base_s=0.2, cap_s=5.0, uniform=random.Random(7).uniform)
    for failures in (1, 2, 3):
        waits = [policy.delay(failures, 2.0) for _ in range(300)]
        assert all(2.0 <= w <= 3.0 for w in waits), (min(waits), max(waits))
        assert len(set(waits)) == len(waits), "jittered: no two clients wait exactly as long"
        assert max(waits) - min(waits) > 0.8, "spread over [r, 1.5 r]"
    long_outage = [policy.delay(8, 1.0) for _ in range(300)]  # backoff ceiling 5 s beats Retry-After 1 s
    assert all(2.5 <= w <= 5.0 for w in long_outage)


def test_without_retry_after_the_backoff_doubles_with_equal_jitter_up_to_the_cap():
    policy = RetryPolicy(base_s=0.2, cap_s=5.0, uniform=random.Random(3).uniform)
    for failures, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (5, 3.2), (6, 5.0), (12, 5.0)]:
        waits = [policy.delay(failures, None) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) == len(waits)


def test_retry_after_reads_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now + 42, UTC), usegmt=True), now) == 42.0
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now - 5, UTC), usegmt=True), now) == 0.0
    assert parse_retry_after("-4", now) == 0.0
    for junk in (None, "", "soon", "nan", "inf", "Tue, 99 Foo 2024"):
        assert parse_retry_after(junk, now) is None


async def test_an_http_date_retry_after_is_waited_out_before_the_next_attempt():
    answers = iter([503, 503, 200])
    when = format_datetime(datetime.fromtimestamp(datetime.now(UTC).timestamp() + 30, UTC), usegmt=True)

    def gateway(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status == 503:
            return httpx.Response(503, json={"detail": "the event store is unavailable"}, headers={"Retry-After": when})
        return httpx.Response(200, json=[{"name": "echo", "description": "echo"}])

    waits, slept = Waits(), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    transport = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    async with AsyncClient("http://gateway", http=transport, retry=RetryPolicy(sleep=sleep), on_retry=waits) as client:
        assert await client.agents() == [{"name": "echo", "description": "echo"}]
    await transport.aclose()
    assert slept == waits.delays and len(slept) == 2
    assert all(28 <= retry_after <= 30 and retry_after <= d <= 1.5 * retry_after for _, d, _, retry_after in waits.seen)


# -- against a real gateway -----------------------------------------------------------------------------------------


@pytest.fixture
def gateway(limited_gateway: GatewayProcess) -> GatewayProcess:
    return limited_gateway


async def create_past_the_limit(client: AsyncClient, waits: Waits) -> str:
    """A create that met the rate limit at least once (a window can roll over between two calls: then go again)."""
    for _ in range(4):
        run = await client.create_run("echo", "hi")
        if any(status == 429 for _, _, status, _ in waits.seen):
            return run.run_id
    raise AssertionError(f"never rate limited: {waits.seen}")


async def test_a_viewer_over_the_viewer_cap_waits_at_least_retry_after_with_jitter_then_gets_the_whole_run(
    gateway: GatewayProcess, http: httpx.AsyncClient
):
    async with AsyncClient(gateway.url, KEY) as client:
        run = await client.create_run("echo", words(150), retry=RetryPolicy(max_retries=6, base_s=1.0))
        first = ResumingViewer([gateway.url], run.run_id, run.token)  # holds the one viewer slot
        holding = asyncio.create_task(first.run(http, timeout_s=60))
        await wait_until(lambda: len(first.received) >= 1, 20, "the first viewer to hold the slot")
        waits = Waits()
        stream = client.stream(run.run_id, run.token, on_retry=waits)
        items = [item async for item in stream]
        reference = await holding
    assert [(i.id, i.type) for i in items] == [(r.id, r.event) for r in reference], "nothing lost to the waiting"
    refused = [(d, ra) for _, d, status, ra in waits.seen if status == 503]
    assert refused, f"the second viewer was never refused: {waits.seen}"
    assert all(ra == 1.0 and 1.0 <= d <= 1.5 for d, ra in refused), refused  # the gateway says Retry-After: 1
    assert len({d for d, _ in refused}) == len(refused), "waits are jittered"


async def test_a_create_past_the_rate_limit_waits_out_retry_after_and_every_attempt_is_the_same_request(
    gateway: GatewayProcess,
):
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    waits = Waits()
    transport = httpx.AsyncClient(event_hooks={"request": [record]})
    async with AsyncClient(gateway.url, KEY, http=transport, on_retry=waits) as client:
        run_id = await create_past_the_limit(client, waits)
    await transport.aclose()
    limited = [(d, ra) for _, d, status, ra in waits.seen if status == 429]
    assert all(ra is not None and 1 <= ra <= 2 and ra <= d <= 1.5 * ra for d, ra in limited), limited
    creates = [r for r in sent if r.method == "POST"]
    last_call = creates[-(len(limited) + 1) :]  # the attempts of the create that met the limit
    assert len({r.headers["idempotency-key"] for r in last_call}) == 1, "retries of one create carry one key"
    assert len(run_id) == 32


async def test_a_create_through_a_refused_connection_backs_off_and_succeeds_once_the_gateway_is_back(
    gateway: GatewayProcess,
):
    async with SeveringProxy(httpx.URL(gateway.url).port) as front:
        await front.down()  # connections refused, like a gateway being restarted
        waits = Waits()

        def back_up_after_two(failures: int, delay: float, exc: Exception) -> None:
            waits(failures, delay, exc)
            if failures == 2:
                asyncio.get_running_loop().create_task(front.up())

        policy = RetryPolicy(base_s=0.05, cap_s=0.2)
        async with AsyncClient(front.url, KEY, retry=policy, on_retry=back_up_after_two) as client:
            run = await client.create_run("echo", "after the restart")  # a 429 on the way is retried the same way
    refused = [(n, d) for n, d, status, _ in waits.seen if status is None]
    assert [n for n, _ in refused][:2] == [1, 2]
    assert all(0.05 * 2 ** (n - 1) / 2 <= d <= min(0.2, 0.05 * 2 ** (n - 1)) for n, d in refused), refused
    assert len(run.run_id) == 32


async def test_retries_end_with_a_typed_error_once_the_budget_is_spent(
    gateway: GatewayProcess, http: httpx.AsyncClient
):
    async with AsyncClient(gateway.url, KEY) as client:
        run = await client.create_run("echo", words(100))
        first = ResumingViewer([gateway.url], run.run_id, run.token)
        holder = asyncio.create_task(first.run(http, timeout_s=60))
        await wait_until(lambda: len(first.received) >= 1, 20, "the first viewer to hold the slot")
        waits = Waits()
        quick = RetryPolicy(max_retries=2, sleep=no_sleep)
        with pytest.raises(GatewayUnavailable) as refused:
            async for _ in client.stream(run.run_id, run.token, retry=quick, on_retry=waits):
                pass
        assert refused.value.status_code == 503 and refused.value.retry_after == 1.0 and refused.value.attempts == 3
        assert "gave up after 3 failed attempts" in refused.value.detail and len(waits.seen) == 2
        holder.cancel()

        # Retry-After beyond the budget: not waited for at all; the error says when to come back.
        waits = Waits()
        patient = AsyncClient(gateway.url, KEY, retry=RetryPolicy(budget_s=0.5, sleep=no_sleep), on_retry=waits)
        with pytest.raises(RateLimited) as limited:
            for _ in range(4):
                await patient.create_run("echo", "x")
        await patient.aclose()
        assert limited.value.status_code == 429 and 1 <= (limited.value.retry_after or 0) <= 2
        assert waits.seen == [] and limited.value.attempts == 1


def test_overrides_of_the_stream_policy_keep_the_rest_of_it():
    client = AsyncClient("http://127.0.0.1:1", retry=RetryPolicy(budget_s=9))
    stream = client.stream("a" * 32, "t", max_retries=3, backoff_s=0.01)
    assert stream.retry == replace(RetryPolicy(budget_s=9), max_retries=3, base_s=0.01)
