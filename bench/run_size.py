"""How much Redis memory one `echo` run takes (for sizing `maxmemory`: docs/deployment.md "The Redis settings runcast
needs"): real gateway and worker processes on a throwaway redis-server, `MEMORY USAGE` of the run's stream and meta
after it completed, next to the sizing formula's estimate.

    .venv/bin/python -m bench.run_size [--words 100,1000]
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
import redis

from runcast.shared.keys import events_key, meta_key
from tests.support.faults import start_together, words
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.redis_server import RedisServer
from tests.support.sse import create_run, read_sse


def estimate(events: int, text_bytes: int, input_bytes: int) -> float:
    """docs/deployment.md: 1.15 x E x (200 + L / 2) for the stream, about 1 KB + the input for the meta."""
    return 1.15 * events * (200 + text_bytes / 2) + 1024 + input_bytes


async def measure(sizes: list[int]) -> None:
    server = RedisServer().start()
    gateway, worker = GatewayProcess(server.url), WorkerProcess(server.url)
    start_together(gateway, worker)
    admin = redis.Redis(port=server.port)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            for n in sizes:
                text = words(n)
                run = await create_run(http, gateway.url, "echo", text)
                events = await read_sse(http, gateway.url, run["run_id"], run["token"])
                stream = admin.memory_usage(events_key(run["run_id"]), samples=0) or 0
                meta = admin.memory_usage(meta_key(run["run_id"]), samples=0) or 0
                size = len(text.encode())
                print(
                    f"echo run of {n} words ({size} bytes of text, {len(events)} events): stream {stream:,} B + "
                    f"meta {meta:,} B = {stream + meta:,} B; formula {estimate(len(events), size, size):,.0f} B"
                )
    finally:
        admin.close()
        gateway.stop()
        worker.stop()
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", default="100,1000", help="comma-separated run lengths, in words (tokens)")
    args = parser.parse_args()
    asyncio.run(measure([int(n) for n in args.words.split(",")]))


if __name__ == "__main__":
    main()
