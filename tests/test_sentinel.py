"""Redis Sentinel and `READONLY`: runcast finds the primary through Sentinel (`redis+sentinel://` URLs) for the stream
log, the hub's dedicated readers and arq's queue, and a write that reaches a demoted primary is a transient error
that makes the client reconnect, never a crash (real redis-server processes: a primary, a replica, a sentinel)."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import httpx
import pytest
import redis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from runcast.shared.redis_client import queue_redis, queue_retry, redis_from_url
from runcast.shared.resilience import TRANSIENT_ERRORS, Backoff, retry_transient
from runcast.shared.sentinel import SentinelUrl
from runcast.shared.sentinel_pool import PrimaryWatch, ResolvingConnection
from runcast.shared.settings import Settings
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType
from runcast.worker.durable import DurableStreamLog
from runcast.worker.settings import arq_redis_settings
from tests.support.eventsource import ResumingViewer
from tests.support.faults import as_log, assert_clean_run, start_together, stored_log, wait_until, words
from tests.support.ports import free_port
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.proxy import SeveringProxy
from tests.support.redis_server import RedisServer
from tests.support.sentinel import SentinelTrio
from tests.support.sse import create_run


def test_sentinel_url_names_the_sentinels_the_service_the_database_and_the_credentials():
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/runcast/2?sentinel_password=sp"
    target = SentinelUrl.parse(url)
    assert target is not None
    assert target.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)]
    assert (target.service, target.db, target.username, target.password) == ("runcast", 2, "app", "s@cret")
    assert target.sentinel_password == "sp" and "s@cret" not in repr(target) and "sp" not in repr(target)
    assert SentinelUrl.parse("redis+sentinel://h:1/mymaster") == SentinelUrl([("h", 1)], "mymaster")
    assert SentinelUrl.parse("redis://localhost:6379/0") is None


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://h:1", "expected redis\\+sentinel"),
        ("redis+sentinel://h:1/svc/x", "the database must be a number"),
        ("redis+sentinel://h:port/svc", "bad sentinel address"),
        ("redis+sentinel://u:pw@h:1/svc/0/extra", "expected redis\\+sentinel"),
        ("redis+sentinel://h:1/svc?timeout=3", "unknown option"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_at_start_with_a_clear_message(url: str, complaint: str):
    with pytest.raises(ValidationError, match=complaint) as refused:
        Settings(redis_url=url)
    assert "pw" not in str(refused.value), "credentials must not be echoed"
    with pytest.raises(ValidationError, match="RUNCAST_QUEUE_REDIS_URL"):
        Settings(queue_redis_url=url)


def test_sentinel_and_cluster_together_are_refused():
    with pytest.raises(ValidationError, match="not a Sentinel URL"):
        Settings(redis_url="redis+sentinel://h:1/svc", redis_cluster=True, queue_redis_url="redis://q:6379/0")


def test_arq_settings_for_a_sentinel_url_use_arqs_sentinel_support():
    conf = arq_redis_settings(Settings(redis_url="redis+sentinel://a:1,b:2/runcast/3"))
    assert conf.sentinel is True and conf.host == [("a", 1), ("b", 2)]
    assert (conf.sentinel_master, conf.database) == ("runcast", 3)


async def test_each_connection_retry_asks_the_sentinels_again_instead_of_redialling_a_dead_primary(
    real_redis_url: str,
):
    """The sentinels first name a dead address, then the live one: the connection tries the dead one once and
    re-resolves on its next retry (redis-py's own SentinelManagedConnection dials the dead one `retries + 1` times)."""
    live = httpx.URL(real_redis_url).port
    answers = [("127.0.0.1", free_port()), ("127.0.0.1", live)]

    class Pool:  # what a SentinelManagedConnection asks of its SentinelConnectionPool
        is_master, check_connection = True, False

        async def get_master_address(self) -> tuple[str, int]:
            return answers.pop(0) if len(answers) > 1 else answers[0]

    dialled: list[int] = []
    retried = tuple(queue_retry(Settings())["retry_on_error"])  # arq's queue retries OSError (a refused connect) too
    conn = ResolvingConnection(connection_pool=Pool(), retry=Retry(NoBackoff(), 5, supported_errors=retried))
    real_connect = conn._connect

    async def counting_connect() -> None:
        dialled.append(conn.port)
        await real_connect()

    conn._connect = counting_connect  # type: ignore[method-assign]
    await conn.connect()
    assert dialled == [dialled[0], live] and dialled[0] != live
    await conn.disconnect()


async def test_primary_watch_closes_every_connection_left_on_a_node_that_is_no_longer_the_primary(
    sentinel_trio: SentinelTrio,
):
    """Pooled connections and those made outside the pool from its settings (the gateway hub's blocking readers) are
    closed once the sentinels name another primary; their next use connects to the new one."""
    client = redis_from_url(sentinel_trio.url)
    pool = client.connection_pool
    outside = pool.connection_class(**pool.connection_kwargs)  # how the hub builds its dedicated reader connections
    watch = PrimaryWatch([client, redis_from_url("redis://127.0.0.1:1/0"), None])  # only Sentinel clients are watched
    try:
        await client.set("k", "v")
        await outside.connect()
        assert len(watch.pools) == 1 and len(pool.opened) == 2
        assert await watch.check() == 0, "nothing is stale while the primary stays"

        old = sentinel_trio.primary_address()
        sentinel_trio.force_failover()
        new = await asyncio.to_thread(sentinel_trio.wait_for_failover, old)
        assert await watch.check() == 2 and not outside.is_connected
        await retry_transient(partial(client.set, "k", "after"), Backoff(10))
        await outside.connect()
        assert (outside.host, outside.port) == new
        assert [(c.host, c.port) for c in pool.opened if c.is_connected] == [new, new]
    finally:
        await outside.disconnect()
        await client.aclose()


def test_readonly_is_a_transient_error():
    assert issubclass(redis.exceptions.ReadOnlyError, TRANSIENT_ERRORS)


async def test_stream_log_and_queue_clients_follow_a_sentinel_failover(sentinel_trio: SentinelTrio):
    """Both clients write to the primary the sentinel names; after the primary dies, to the promoted replica."""
    client = redis_from_url(sentinel_trio.url)
    queue = queue_redis(Settings(redis_url=sentinel_trio.url))
    try:
        await client.set("before", "1")
        await queue.enqueue_job("noop", _job_id="job-before", _queue_name="q")
        assert await client.execute_command("WAIT", 1, 5000) == 1  # replication is asynchronous: let it catch up
        old = sentinel_trio.kill_primary()
        new = await asyncio.to_thread(sentinel_trio.wait_for_failover, old)
        # The pooled connection to the dead primary fails (a transient error); the retry reconnects through Sentinel.
        assert await retry_transient(partial(client.get, "before"), Backoff(10)) == "1"  # replicated before the kill
        await client.set("after", "2")
        assert await queue.enqueue_job("noop", _job_id="job-after", _queue_name="q") is not None  # retried inside
        promoted = redis.Redis.from_url(sentinel_trio.node_url(new), decode_responses=True)
        assert promoted.get("after") == "2" and promoted.zcard("q") == 2
        promoted.close()
    finally:
        await client.aclose()
        await queue.aclose()


async def test_a_write_that_reaches_a_demoted_primary_is_retried_on_a_new_connection(caplog: pytest.LogCaptureFixture):
    """A failover behind a proxy or DNS name (a plain redis:// URL): the worker's connection still goes to the old
    primary, now a replica, and its append gets READONLY. That is transient: the connection is closed, the append
    backs off and retries, lands on the new primary through a new connection, and is published exactly once."""
    old, new = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start(), None
    async with SeveringProxy(old.port) as proxy:  # the "virtual IP" clients are configured with
        client = redis_from_url(f"redis://127.0.0.1:{proxy.port}/0")
        try:
            new = RedisServer(extra=["--replicaof", "127.0.0.1", str(old.port)]).start()
            log = DurableStreamLog(client, retry_s=10)
            await log.create_run("r1", "echo", "x")
            await log.append("r1", chunk(1))
            admin_new = redis.Redis(port=new.port)
            await asyncio.to_thread(_wait_replicated, admin_new, "runcast:{r1}:events", 1)

            admin_new.replicaof("NO", "ONE")  # the failover: promote the replica, demote the old primary
            redis.Redis(port=old.port).replicaof("127.0.0.1", new.port)
            proxy.target_port = new.port  # new connections go to the new primary; the open one still to the old
            with caplog.at_level(logging.WARNING, "runcast.resilience"):
                second = await log.append("r1", chunk(2))
            assert any("ReadOnlyError" in record.getMessage() for record in caplog.records), "READONLY was not met"
            entries = await log.read_all("r1")
            assert [e.id for e in entries][-1] == second
            assert [StreamingEvent.from_json(e.event).data.token_count for e in entries] == [1, 2]
            admin_new.close()
        finally:
            await client.aclose()
            old.cleanup()
            if new is not None:
                new.cleanup()


def chunk(n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id="r1")


def _wait_replicated(admin: redis.Redis, key: str, length: int) -> None:
    for _ in range(200):
        if admin.exists(key) and admin.xlen(key) >= length:
            return
        time.sleep(0.02)
    raise TimeoutError("the replica never got the entry")


@pytest.mark.slow
async def test_gateway_and_worker_configured_through_sentinel_stream_a_run_end_to_end(
    sentinel_trio: SentinelTrio, http: httpx.AsyncClient
):
    gateway, worker = GatewayProcess(sentinel_trio.url), WorkerProcess(sentinel_trio.url)
    start_together(gateway, worker)
    try:
        text = words(60)
        run = await create_run(http, gateway.url, "echo", text)
        viewer = ResumingViewer([gateway.url], run["run_id"], run["token"])
        task = asyncio.create_task(viewer.run(http, timeout_s=30))
        await wait_until(lambda: len(viewer.received) >= 3, 20, "the viewer mid-stream")
        primary = sentinel_trio.node_url()
        admin = redis.Redis.from_url(primary, decode_responses=True)
        names = [c["name"] for c in admin.client_list()]
        admin.close()
        assert "runcast-hub-reader" in names, "the hub's dedicated reader must be on the primary Sentinel named"
        await task
        log = await stored_log(primary, run["run_id"])
        assert_clean_run(log, text)
        assert as_log(viewer.received) == log
        assert gateway.alive() and worker.alive()
    finally:
        gateway.stop()
        worker.stop()
