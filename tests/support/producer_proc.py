"""An external producer in a process of its own (for the publish API's kill test): it publishes one CHUNK every
`pause_ms` until it is killed. `python -m tests.support.producer_proc REDIS_URL RUN_ID [PAUSE_MS]`."""

from __future__ import annotations

import asyncio
import sys

import runcast


async def main(redis_url: str, run_id: str, pause_ms: int) -> None:
    async with runcast.publisher(redis_url) as publisher, publisher.run(run_id, model_name="producer-proc") as run:
        print("publishing", flush=True)
        n = 0
        while True:
            await run.chunk(f" t{n}")
            n += 1
            await asyncio.sleep(pause_ms / 1000)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20))
