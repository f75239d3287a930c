"""Fixtures: a real redis-server for the whole session (or RUNCAST_TEST_REDIS_URL), real processes on demand."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import httpx
import pytest
from redis.asyncio import Redis, RedisCluster

from runcast.shared.redis_client import cluster_from_url, redis_from_url
from runcast.shared.streamlog import StreamLog
from tests.support.faults import start_together
from tests.support.processes import LIMITED_ENV, GatewayProcess, Process, WorkerProcess
from tests.support.redis_cluster import LocalCluster, cluster_tools_available
from tests.support.redis_server import RedisServer, redis_server_available
from tests.support.requirements import ON_CI, require, require_redis_server
from tests.support.sentinel import SentinelTrio
from tests.support.stack import Stack, running_stack

# jaf-py imports litellm, which fetches a price list from GitHub at import (three retries offline, ~10 s) unless told
# not to; tests import jaf directly too (tests/support/jaf_agents.py), and the processes they start inherit this.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_FAKE_NOTICE = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! runcast tests: no redis-server on PATH and no RUNCAST_TEST_REDIS_URL.                              !!
!! In-process tests run on fakeredis INSTEAD of a real Redis; tests needing real processes are skipped. !!
!! Install redis-server (apt-get install -y redis-server) for the real runs. Under CI=true this fails.  !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str | None]:
    """The real Redis every test uses; None only off CI on a machine with no redis-server (fakeredis then)."""
    env_url = os.environ.get("RUNCAST_TEST_REDIS_URL")
    if env_url:
        yield env_url
        return
    if not redis_server_available():
        if ON_CI:
            pytest.fail("CI=true but redis-server is not installed: .ci/run must install it", pytrace=False)
        sys.stderr.write(_FAKE_NOTICE)
        yield None
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def real_redis_url(redis_url: str | None) -> str:
    """For tests that need real processes or a real server: never faked."""
    if redis_url is None:
        require_redis_server()
    return redis_url


@pytest.fixture
async def stack(redis_url: str | None) -> AsyncIterator[Stack]:
    async with running_stack(redis_url) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        yield client


P = TypeVar("P", bound=Process)


def _running(proc: P) -> Iterator[P]:
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gateway_proc(module_redis_url: str) -> Iterator[GatewayProcess]:
    """A real `runcast gateway` process (module-scoped: started once per test file)."""
    yield from _running(GatewayProcess(module_redis_url))


@pytest.fixture(scope="module")
def second_gateway_proc(module_redis_url: str) -> Iterator[GatewayProcess]:
    """Another gateway on the same Redis, for viewers that move between gateways."""
    yield from _running(GatewayProcess(module_redis_url))


@pytest.fixture(scope="module")
def worker_proc(module_redis_url: str) -> Iterator[WorkerProcess]:
    yield from _running(WorkerProcess(module_redis_url))


@pytest.fixture(scope="session")
def limited_gateway(redis_url: str | None) -> Iterator[GatewayProcess]:
    """A gateway (and a worker) whose viewer cap answers 503 and whose create rate limit answers 429 (LIMITED_ENV);
    one per session, shared by the Python and the JavaScript client tests. On its own redis-server: its worker must
    not take other tests' jobs (`gateway.env["RUNCAST_REDIS_URL"]` is that server)."""
    if redis_url is None:
        require_redis_server()
    server = RedisServer().start()
    gateway, worker = GatewayProcess(server.url, **LIMITED_ENV), WorkerProcess(server.url)
    try:
        start_together(gateway, worker)
        yield gateway
    finally:
        gateway.stop()
        worker.stop()
        server.cleanup()


@pytest.fixture(scope="module")
def module_redis_url(redis_url: str | None) -> str:
    if redis_url is None:
        require_redis_server()
    return redis_url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real 3-master Redis Cluster (started once per session, only when a test asks). Never faked: skipped off CI
    without redis-server/redis-cli, a failure under CI=true."""
    require(cluster_tools_available(), "needs redis-server and redis-cli on PATH for a real Redis Cluster")
    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def sentinel_trio(real_redis_url: str) -> Iterator[SentinelTrio]:
    """A fresh primary + replica + sentinel (three real redis-server processes) per test: failover tests break it."""
    trio = SentinelTrio().start()
    try:
        yield trio
    finally:
        trio.cleanup()


@pytest.fixture
async def redis(real_redis_url: str) -> AsyncIterator[Redis]:
    client = redis_from_url(real_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def log(redis: Redis) -> StreamLog:
    return StreamLog(redis)


@pytest.fixture
async def cluster_client(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = cluster_from_url(redis_cluster.url)
    await client.initialize()
    yield client
    await client.aclose()
