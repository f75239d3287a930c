"""`Idempotency-Key` on `POST /v1/runs`: a create that is retried returns the run the first attempt made.

Creating a run is not idempotent by itself: a client that gets a 503, a timeout or a dropped connection cannot know
whether the run was created (and its agent queued) before the failure, and a blind retry could run the agent twice.
With a key, the gateway remembers `key -> run id` (one `SET NX` per create, in Redis, so it holds across gateways and
for as long as the run is kept, RUNCAST_RETENTION_S), and a retry with the same key and the same body gets the same
run (a fresh token for it, header `Idempotent-Replayed: true`). A replay also finishes what a failed first attempt
left undone: the run's meta is created if it is missing (never reset if it exists) and a still-queued run is enqueued
again (arq ignores a job id it already holds, and a worker only ever starts a run that is still `queued`). The same
key with a different body is a 422. Keys are scoped by API key (hashed, as the rate limit is) and stored hashed.

The Python client and runcast.js send a fresh key with every create, which is what lets them retry creates by default.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from fastapi import HTTPException
from redis.asyncio import Redis

from runcast.gateway.guards.auth import bearer
from runcast.gateway.guards.limits import key_identity
from runcast.gateway.schemas import CreateRunRequest
from runcast.shared.keys import PREFIX

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
"""1-128 visible ASCII characters (a UUID is the usual choice)."""


@dataclass(frozen=True)
class Claim:
    run_id: str
    replayed: bool


def redis_key(idempotency_key: str, authorization: str | None) -> str:
    scope = key_identity(api_key) if (api_key := bearer(authorization)) else "open"
    digest = hashlib.sha256(f"{scope}\0{idempotency_key}".encode()).hexdigest()[:40]
    return f"{PREFIX}:idem:{{{digest}}}"


def fingerprint(body: CreateRunRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def check_key(value: str) -> str:
    if not KEY_RE.match(value):
        raise HTTPException(400, f"{HEADER} must be 1-128 visible ASCII characters (e.g. a UUID)")
    return value


async def claim(
    redis: Redis, idempotency_key: str, authorization: str | None, body: CreateRunRequest, run_id: str, ttl_s: int
) -> Claim:
    """Bind the key to `run_id` unless it is bound already; then the run it is bound to, as a replay."""
    key = redis_key(check_key(idempotency_key), authorization)
    value = f"{run_id} {fingerprint(body)}"
    if await redis.set(key, value, nx=True, ex=ttl_s):
        return Claim(run_id, replayed=False)
    stored = await redis.get(key)
    if stored is None:  # expired between the two commands: bind it now
        await redis.set(key, value, ex=ttl_s)
        return Claim(run_id, replayed=False)
    first_run, _, first_fingerprint = stored.partition(" ")
    if first_fingerprint != fingerprint(body):
        raise HTTPException(422, f"this {HEADER} was already used for a different request; use a new key")
    return Claim(first_run, replayed=True)
