"""Disconnect/resume soak (real processes, real Redis): 20 concurrent runs, viewers that drop after a random number
of events and resume on the other gateway with Last-Event-ID, many cycles: 0 lost, 0 duplicated, order kept.
`python -m bench.soak` runs the same code for 1,000+ cycles and prints the figures."""

from __future__ import annotations

import pytest

from bench.soak import soak
from tests.support.processes import GatewayProcess, WorkerProcess

pytestmark = pytest.mark.slow


async def test_twenty_runs_with_viewers_dropping_and_resuming_lose_and_duplicate_nothing(
    module_redis_url: str, gateway_proc: GatewayProcess, second_gateway_proc: GatewayProcess, worker_proc: WorkerProcess
):
    figures = await soak(
        [gateway_proc.url, second_gateway_proc.url],
        module_redis_url,
        runs=20,
        viewers_per_run=2,
        tokens=40,
        max_burst=6,
    )
    print(f"\n[soak] {figures.line()}")
    assert figures.runs == 20 and figures.viewers == 40
    assert figures.cycles >= 200, "too few disconnect/resume cycles to mean anything"
    assert figures.lost == 0 and figures.duplicated == 0 and figures.out_of_order == 0
    assert figures.mismatched_viewers == []
    assert figures.events_delivered == figures.events_expected
