"""Disconnect/resume soak: many concurrent runs, viewers that drop at random points and resume (alternating
gateways) with Last-Event-ID until the terminal event; every viewer's sequence is checked against Redis.

    python -m bench.soak [--runs 20] [--viewers 3] [--tokens 120] [--cycles 1000] [--gateways 2]

Starts its own redis-server, gateway and worker processes on loopback and prints the figures (cycles, events
delivered, lost, duplicated, out of order). It keeps starting rounds of runs until `--cycles` disconnect/resume
cycles have been made. `tests/test_soak.py` runs the same code with a modest count.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx

from tests.support.eventsource import ResumingViewer
from tests.support.faults import stored_log, words
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.redis_server import RedisServer


@dataclass
class SoakFigures:
    runs: int = 0
    viewers: int = 0
    cycles: int = 0
    events_expected: int = 0
    events_delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    seconds: float = 0.0
    mismatched_viewers: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"soak: {self.runs} runs, {self.viewers} viewers, {self.cycles} disconnect/resume cycles, "
            f"{self.events_delivered} events delivered (expected {self.events_expected}), lost {self.lost}, "
            f"duplicated {self.duplicated}, out of order {self.out_of_order}, {self.seconds:.1f} s"
        )


def compare(expected_ids: list[str], got_ids: list[str | None]) -> tuple[int, int, int]:
    """(lost, duplicated, out_of_order) of what one viewer received against the run's log."""
    seen = [i for i in got_ids if i is not None]
    lost = len(set(expected_ids) - set(seen))
    duplicated = len(seen) - len(set(seen))
    out_of_order = 0 if [i for i in seen if i in set(expected_ids)] == expected_ids else 1
    return lost, duplicated, out_of_order


async def soak_round(
    http: httpx.AsyncClient,
    gateways: list[str],
    redis_url: str,
    figures: SoakFigures,
    *,
    runs: int,
    viewers_per_run: int,
    tokens: int,
    max_burst: int,
    rng: random.Random,
) -> None:
    created = []
    for i in range(runs):
        response = await http.post(
            f"{gateways[i % len(gateways)]}/v1/runs", json={"agent": "echo", "input": words(tokens)}
        )
        response.raise_for_status()
        created.append(response.json())
    viewers = [
        ResumingViewer(
            rng.sample(gateways, len(gateways)),
            run["run_id"],
            run["token"],
            drop_after=lambda: rng.randint(1, max_burst),
        )
        for run in created
        for _ in range(viewers_per_run)
    ]
    await asyncio.gather(*(v.run(http, timeout_s=120) for v in viewers))
    logs = {run["run_id"]: await stored_log(redis_url, run["run_id"]) for run in created}
    for viewer in viewers:
        log = logs[viewer.run_id]
        expected_ids = [entry_id for entry_id, _, _ in log]
        lost, duplicated, out_of_order = compare(expected_ids, [r.id for r in viewer.received])
        if (lost, duplicated, out_of_order) != (0, 0, 0) or [(r.id, r.event, r.data) for r in viewer.received] != log:
            figures.mismatched_viewers.append(viewer.run_id)
        figures.lost += lost
        figures.duplicated += duplicated
        figures.out_of_order += out_of_order
        figures.events_expected += len(log)
        figures.events_delivered += len(viewer.received)
        figures.cycles += viewer.dropped + viewer.broken
    figures.runs += runs
    figures.viewers += len(viewers)


async def soak(
    gateways: list[str],
    redis_url: str,
    *,
    runs: int = 20,
    viewers_per_run: int = 2,
    tokens: int = 60,
    max_burst: int = 8,
    min_cycles: int = 0,
    seed: int = 1,
) -> SoakFigures:
    """Rounds of `runs` concurrent runs until at least `min_cycles` cycles (one round when 0)."""
    figures, rng = SoakFigures(), random.Random(seed)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=runs * viewers_per_run + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as http:
        while True:
            await soak_round(
                http,
                gateways,
                redis_url,
                figures,
                runs=runs,
                viewers_per_run=viewers_per_run,
                tokens=tokens,
                max_burst=max_burst,
                rng=rng,
            )
            if figures.cycles >= min_cycles:
                break
    figures.seconds = time.monotonic() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=3, help="viewers per run")
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--max-burst", type=int, default=8, help="a viewer drops after 1..N events")
    parser.add_argument("--cycles", type=int, default=1000, help="keep going until this many cycles")
    parser.add_argument("--gateways", type=int, default=2)
    args = parser.parse_args()

    server = RedisServer().start()
    worker = WorkerProcess(server.url).start()
    gateways = [GatewayProcess(server.url).start() for _ in range(args.gateways)]
    try:
        figures = asyncio.run(
            soak(
                [g.url for g in gateways],
                server.url,
                runs=args.runs,
                viewers_per_run=args.viewers,
                tokens=args.tokens,
                max_burst=args.max_burst,
                min_cycles=args.cycles,
            )
        )
    finally:
        for gateway in gateways:
            gateway.stop()
        worker.stop()
        server.cleanup()
    print(figures.line())
    if figures.mismatched_viewers:
        print(f"MISMATCH in {len(figures.mismatched_viewers)} viewers")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
