"""What a refused request must not create: a run's meta hash, or a job in arq's queue."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True)
class Created:
    """The run meta hashes and queued job ids at one moment."""

    metas: frozenset[str]
    queued: frozenset[str]

    def nothing_new_since(self, before: Created) -> bool:
        """No run was created, and no job was queued for a new run. Meanwhile a worker may take jobs queued earlier,
        and arq may queue an earlier run's job again (a retry after a stopped worker): those runs existed before."""
        known = before.queued | {meta.split("{", 1)[1].split("}", 1)[0] for meta in before.metas}
        return self.metas == before.metas and self.queued <= known


async def created_anything(redis: Redis, queue_name: str) -> Created:
    metas = frozenset([key async for key in redis.scan_iter(match="runcast:{*}:meta", count=1000)])
    return Created(metas, frozenset(await redis.zrange(queue_name, 0, -1)))
