"""What the gateway's routes share, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from arq.connections import ArqRedis
from fastapi import Request
from redis.asyncio import Redis

from runcast.gateway.hub.feed import EventFeed
from runcast.shared.settings import Settings
from runcast.shared.streamlog import StreamLog


@dataclass
class GatewayState:
    settings: Settings
    redis: Redis
    stream_log: StreamLog
    queue: ArqRedis
    feed: EventFeed
    secret: bytes


async def get_state(request: Request) -> GatewayState:
    return request.app.state.runcast
