"""Specifications of the fan-out hub's internals, against the real redis-server: the splice, slow subscribers,
resets during catch-up, waking the blocked reader, expiry, and that readers and connections stay bounded."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from runcast.gateway.hub.fanout import Hub, retrying
from runcast.shared.ids import START_ID
from runcast.shared.keys import events_key, meta_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streamlog import Entry, Reset, StreamLog
from tests.support.hub import collect, eventually, hub_metric, hub_stream_reads, new_run, publish
from tests.support.redis_server import RedisServer

HubFactory = Callable[..., Hub]


@pytest.fixture
async def make_hub(log: StreamLog) -> AsyncIterator[HubFactory]:
    hubs: list[Hub] = []

    def make(**options: object) -> Hub:
        hub = Hub(log, **options)  # type: ignore[arg-type]
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.close()


def ids(entries: list[Entry]) -> list[str]:
    return [entry.id for entry in entries]


# -- the splice: any join offset gets exactly the suffix, however the publisher races -------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.integers(0, 25),
    after=st.integers(0, 25),
    offset_fraction=st.floats(0, 1),
    history_size=st.sampled_from([0, 3, 2048]),
    already_followed=st.booleans(),
)
def test_any_join_offset_gets_exactly_the_suffix_while_the_publisher_races(
    real_redis_url: str, before: int, after: int, offset_fraction: float, history_size: int, already_followed: bool
):
    async def scenario() -> None:
        client = redis_from_url(real_redis_url)
        log = StreamLog(client)
        hub = Hub(log, history_size=history_size)
        try:
            run_id = await new_run(log)
            early = await publish(log, run_id, before, end=False)
            watcher = None
            if already_followed:  # the run is in the reader (and its history) before our subscriber joins
                watcher = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
                await eventually(lambda: run_id in hub.runs and hub.runs[run_id].ready.is_set(), what="join")
            offset = round(offset_fraction * len(early))
            resume = early[offset - 1] if offset else START_ID
            subscriber = asyncio.create_task(collect(hub.subscribe(run_id, resume)))
            late = await publish(log, run_id, after)  # races the subscriber's join
            resets, got = await asyncio.wait_for(subscriber, 10)
            assert resets == []
            assert ids(got) == (early + late)[offset:]
            if watcher is not None:
                assert ids((await asyncio.wait_for(watcher, 10))[1]) == early + late
        finally:
            await hub.close()
            await client.aclose()

    asyncio.run(scenario())


async def test_resuming_at_the_terminal_event_ends_at_once(make_hub: HubFactory, log: StreamLog):
    run_id = await new_run(log)
    all_ids = await publish(log, run_id, 3)
    hub = make_hub()
    assert await asyncio.wait_for(collect(hub.subscribe(run_id, all_ids[-1])), 5) == ([], [])
    _, whole = await asyncio.wait_for(collect(hub.subscribe(run_id, START_ID)), 5)
    assert ids(whole) == all_ids


@pytest.mark.parametrize("history_size", [0, 2048])
async def test_joining_a_trimmed_run_from_the_start_gets_a_reset_then_everything_kept(
    make_hub: HubFactory, log: StreamLog, redis: Redis, history_size: int
):
    run_id = await new_run(log)
    sent = await publish(log, run_id, 40)
    await redis.xtrim(events_key(run_id), maxlen=10, approximate=False)
    hub = make_hub(history_size=history_size)
    resets, got = await asyncio.wait_for(collect(hub.subscribe(run_id, START_ID)), 5)
    assert resets == [Reset(requested=START_ID, first_available=sent[-10])]
    assert ids(got) == sent[-10:]


async def test_a_viewer_leaving_during_the_join_neither_leaks_the_run_nor_fails_the_others(
    make_hub: HubFactory, log: StreamLog
):
    hub = make_hub()
    run_id = await new_run(log)
    gate = asyncio.Event()
    real_stream_tail = hub._stream_tail

    async def slow_stream_tail(run: object) -> object:
        await gate.wait()
        return await real_stream_tail(run)  # type: ignore[arg-type]

    hub._stream_tail = slow_stream_tail  # type: ignore[method-assign]
    joining = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
    await asyncio.sleep(0.05)
    joining.cancel()  # the viewer doing the join hangs up
    hub._stream_tail = real_stream_tail  # type: ignore[method-assign]
    await asyncio.sleep(0.05)
    sent = await publish(log, run_id, 3)
    assert ids((await asyncio.wait_for(waiting, 5))[1]) == sent
    assert hub.runs == {}
    await eventually(lambda: hub.readers == {} and hub_metric("runcast_hub_readers") == 0, what="reader retired")


async def test_entries_waiting_for_a_subscriber_come_as_one_batch_and_their_lag_is_measured(
    make_hub: HubFactory, log: StreamLog
):
    hub = make_hub()
    run_id = await new_run(log)
    first_id = (await publish(log, run_id, 1, end=False))[0]
    viewer = hub.subscribe(run_id, START_ID)
    assert ids(await anext(viewer)) == [first_id]
    lag_count = hub_metric("runcast_hub_delivery_lag_seconds_count")
    delivered = hub_metric("runcast_hub_events_delivered_total")
    waiting = await publish(log, run_id, 5, end=False)
    await eventually(lambda: hub.runs[run_id].cursor == waiting[-1], what="the reader got them all")
    assert ids(await anext(viewer)) == waiting  # five XADDs, five reader rounds or fewer: one batch
    assert hub_metric("runcast_hub_delivery_lag_seconds_count") == lag_count + 5
    assert hub_metric("runcast_hub_events_delivered_total") == delivered + 5
    await viewer.aclose()


def test_runcast_feed_picks_the_read_path():
    from runcast.gateway.app import feed_for
    from runcast.gateway.hub.feed import DirectFeed
    from runcast.shared.settings import Settings

    assert Settings().feed == "hub"
    assert isinstance(feed_for(Settings(feed="direct"))(StreamLog(Redis())), DirectFeed)
    feed = feed_for(Settings(feed="hub", hub_queue_size=7, hub_history_size=9))(StreamLog(Redis()))  # no I/O yet
    assert isinstance(feed, Hub) and (feed.queue_size, feed.history_size) == (7, 9)


# -- slow subscribers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("history_size", "source"), [(0, "redis"), (4096, "memory")])
async def test_a_stalled_subscriber_is_detached_delays_no_one_and_later_gets_every_event_in_order(
    make_hub: HubFactory, log: StreamLog, history_size: int, source: str
):
    hub = make_hub(queue_size=4, history_size=history_size)
    run_id = await new_run(log)
    first_id = (await publish(log, run_id, 1, end=False))[0]
    stalled = hub.subscribe(run_id, START_ID)
    assert ids(await anext(stalled)) == [first_id]  # joined; now it stops reading
    fast = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
    catchups, xranges = (
        hub_metric("runcast_hub_catchups_total"),
        hub_metric("runcast_hub_stream_reads_total", command="xrange"),
    )

    rest = await publish(log, run_id, 60)
    _, fast_got = await asyncio.wait_for(fast, 5)  # finishes although one viewer reads nothing at all
    assert ids(fast_got) == [first_id, *rest]
    run = hub.runs[run_id]
    assert all(len(subscriber) <= 4 for subscriber in run.subscribers), "an inbox grew past its bound"
    assert any(subscriber.lagging for subscriber in run.subscribers)

    _, stalled_rest = await asyncio.wait_for(collect(stalled), 5)
    assert ids(stalled_rest) == rest
    assert hub_metric("runcast_hub_catchups_total") > catchups
    read_from_redis = hub_metric("runcast_hub_stream_reads_total", command="xrange") > xranges
    assert read_from_redis == (source == "redis")


async def test_a_catch_up_point_trimmed_meanwhile_gets_a_reset_then_the_rest(
    make_hub: HubFactory, log: StreamLog, redis: Redis
):
    hub = make_hub(queue_size=2, history_size=0)
    run_id = await new_run(log)
    first_id = (await publish(log, run_id, 1, end=False))[0]
    stalled = hub.subscribe(run_id, START_ID)
    assert ids(await anext(stalled)) == [first_id]
    middle = await publish(log, run_id, 50, end=False)
    await redis.xtrim(events_key(run_id), maxlen=10, approximate=False)
    final = await publish(log, run_id, 0)  # the terminal event
    kept = middle[-10:] + final

    received: list[Entry | Reset] = []
    async for batch in stalled:
        received.extend([batch] if isinstance(batch, Reset) else batch)
    resets = [i for i, item in enumerate(received) if isinstance(item, Reset)]
    assert len(resets) == 1
    before, reset, after = received[: resets[0]], received[resets[0]], received[resets[0] + 1 :]
    assert isinstance(reset, Reset)
    assert ids(after) == kept  # everything still kept, in order
    assert reset.first_available == kept[0]
    assert reset.requested == (before[-1].id if before else first_id)
    assert ids(before) == middle[: len(before)]  # what it had before falling behind, without a gap


async def test_entries_trimmed_while_the_reader_was_cut_off_give_live_viewers_a_reset_not_a_silent_gap(
    make_hub: HubFactory, log: StreamLog, redis: Redis
):
    hub = make_hub(history_size=2048)
    run_id = await new_run(log)
    seen = await publish(log, run_id, 3, end=False)
    viewer = hub.subscribe(run_id, START_ID)
    assert ids(await anext(viewer)) == seen
    (reader,) = hub.readers.values()
    await eventually(lambda: reader.client_id is not None, what="the reader to connect")
    errors = hub_metric("runcast_hub_reader_errors_total")

    def redis_unreachable() -> Any:
        raise RedisConnectionError("Redis is unreachable (test)")

    connect, reader._connect = reader._connect, redis_unreachable  # the outage: no new connection works
    await redis.client_kill_filter(_id=reader.client_id)  # ...and the current one dies
    await eventually(lambda: hub_metric("runcast_hub_reader_errors_total") > errors, what="the reader to lose Redis")
    missed = await publish(log, run_id, 50, end=False)
    await redis.xtrim(events_key(run_id), maxlen=10, approximate=False)  # the log moves past the reader's cursor
    final = await publish(log, run_id, 0)
    kept = missed[-10:] + final
    reader._connect = connect  # Redis is back

    received: list[Entry | Reset] = []
    async for batch in viewer:
        received.extend([batch] if isinstance(batch, Reset) else batch)
    assert isinstance(received[0], Reset), "the viewer must be told it missed entries"
    assert (received[0].requested, received[0].first_available) == (seen[-1], kept[0])
    assert ids([entry for entry in received[1:] if isinstance(entry, Entry)]) == kept
    assert len(received) == 1 + len(kept)


# -- the reader: woken on key set changes, one connection, stops with its last run ----------------------------------


async def test_a_run_joining_while_the_reader_follows_others_is_followed_at_once_on_the_same_connection(
    make_hub: HubFactory, log: StreamLog
):
    hub = make_hub()
    run_a, run_b = await new_run(log), await new_run(log)
    viewer_a = asyncio.create_task(collect(hub.subscribe(run_a, START_ID)))
    await eventually(lambda: run_a in hub.runs and hub.runs[run_a].ready.is_set(), what="A joined")
    (reader,) = hub.readers.values()
    connection = reader.client_id
    reads = hub_stream_reads()
    viewer_b = asyncio.create_task(collect(hub.subscribe(run_b, START_ID)))
    sent_b = await publish(log, run_b, 3)
    assert ids((await asyncio.wait_for(viewer_b, 5))[1]) == sent_b
    assert reader.client_id == connection and list(hub.readers.values()) == [reader]  # one SUBSCRIBE, same reader
    assert hub_stream_reads() - reads == 1  # B's join (its tail); its events came with their announcements
    viewer_a.cancel()


async def test_entries_that_were_never_announced_are_read_from_the_log_in_order(
    make_hub: HubFactory, log: StreamLog, redis: Redis
):
    """A writer that does not announce (an older worker), or a lost message: the next announcement names an entry
    the hub does not have, so it reads the log after what it has; nothing is skipped or doubled."""
    hub = make_hub()
    run_id = await new_run(log)
    viewer = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
    first = await publish(log, run_id, 2, end=False)
    await eventually(lambda: hub.runs[run_id].cursor == first[-1], what="announced entries")
    silent = [await redis.xadd(events_key(run_id), {"type": "chunk", "event": '{"type":"chunk"}'}) for _ in range(3)]
    await redis.hset(meta_key(run_id), "last_event_id", silent[-1])
    fills = hub_metric("runcast_hub_gap_fills_total")
    rest = await publish(log, run_id, 2)
    assert ids((await asyncio.wait_for(viewer, 5))[1]) == first + silent + rest
    assert hub_metric("runcast_hub_gap_fills_total") == fills + 1


def hub_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("runcast-hub") and not t.done()]


async def test_readers_stop_when_the_last_viewer_leaves_mid_run(make_hub: HubFactory, log: StreamLog):
    hub = make_hub()
    runs = [await new_run(log) for _ in range(3)]
    viewers = [asyncio.create_task(collect(hub.subscribe(run_id, START_ID))) for run_id in runs for _ in range(4)]
    await eventually(
        lambda: (hub_metric("runcast_hub_runs_followed"), hub_metric("runcast_hub_subscribers")) == (3, 12),
        what="3 runs followed by 12 subscribers",
    )
    assert hub_metric("runcast_hub_readers") == 1  # one reader for all runs
    for run_id in runs:
        await publish(log, run_id, 2, end=False)
    for viewer in viewers:  # every viewer disconnects mid-run
        viewer.cancel()
    await asyncio.gather(*viewers, return_exceptions=True)
    await eventually(lambda: hub_metric("runcast_hub_readers") == 0, what="readers gauge back to 0")
    assert hub_metric("runcast_hub_runs_followed") == 0
    assert hub_metric("runcast_hub_subscribers") == 0
    assert hub.runs == {} and hub.readers == {}
    await eventually(lambda: not [t for t in hub_tasks() if "reader" in t.get_name()], what="reader task ends")


async def test_a_run_leaves_the_reader_after_its_terminal_entry(make_hub: HubFactory, log: StreamLog):
    hub = make_hub()
    run_id = await new_run(log)
    viewer = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
    await eventually(lambda: hub_metric("runcast_hub_runs_followed") == 1)
    sent = await publish(log, run_id, 5)
    assert ids((await asyncio.wait_for(viewer, 5))[1]) == sent
    await eventually(lambda: hub_metric("runcast_hub_readers") == 0, what="reader retired")
    assert hub_metric("runcast_hub_runs_followed") == 0


async def test_a_run_that_expires_while_followed_ends_its_viewers(make_hub: HubFactory, log: StreamLog, redis: Redis):
    hub = make_hub(idle_check_s=0.1)
    run_id = await new_run(log)
    sent = await publish(log, run_id, 2, end=False)
    viewer = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
    await asyncio.sleep(0.2)
    await redis.delete(events_key(run_id), meta_key(run_id))  # what retention does to an abandoned run
    assert ids((await asyncio.wait_for(viewer, 5))[1]) == sent


async def test_redis_connections_stay_bounded_whatever_the_viewer_count(
    make_hub: HubFactory, log: StreamLog, redis: Redis
):
    hub = make_hub(history_size=0, max_connections=3)  # every viewer needs its own XRANGE backlog read
    runs = {await new_run(log): [] for _ in range(3)}
    for run_id in runs:
        runs[run_id] = await publish(log, run_id, 30, end=False)
    rng = random.Random(7)
    plans = [(run_id, rng.randint(0, 30)) for run_id in runs for _ in range(100)]
    seen: list[int] = []

    async def count_connections() -> None:
        while True:
            clients = await redis.client_list()
            seen.append(sum(1 for c in clients if c.get("name", "").startswith("runcast-hub")))
            await asyncio.sleep(0.01)

    counter = asyncio.create_task(count_connections())
    viewers = [
        asyncio.create_task(collect(hub.subscribe(run_id, runs[run_id][k - 1] if k else START_ID)))
        for run_id, k in plans
    ]
    tails = {run_id: await publish(log, run_id, 10) for run_id in runs}
    results = await asyncio.wait_for(asyncio.gather(*viewers), 15)
    counter.cancel()
    for (run_id, k), (_, got) in zip(plans, results, strict=True):
        assert ids(got) == (runs[run_id] + tails[run_id])[k:]
    assert seen and max(seen) <= 3 + 1, f"hub connections seen: {max(seen)} (pool of 3 + 1 reader)"


# -- resilience ----------------------------------------------------------------------------------------------------


async def test_the_reader_survives_a_redis_restart_and_resumes_every_run_from_its_last_id(real_redis_url: str):
    """Its own redis-server (append-only file, so the streams survive the restart); a real kill and restart."""
    server = RedisServer(appendonly=True).start()
    client = redis_from_url(server.url)
    log = StreamLog(client)
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        viewers = [asyncio.create_task(collect(hub.subscribe(run_id, START_ID))) for _ in range(5)]
        before = await publish(log, run_id, 10, end=False)
        await eventually(lambda: run_id in hub.runs and hub.runs[run_id].cursor == before[-1], what="delivered")
        errors = hub_metric("runcast_hub_reader_errors_total")
        server.restart()
        await retrying(client.ping)  # the publisher's pooled connection died too
        after = await publish(log, run_id, 10)
        for _, got in await asyncio.wait_for(asyncio.gather(*viewers), 20):
            assert ids(got) == before + after
        assert hub_metric("runcast_hub_reader_errors_total") > errors
    finally:
        await hub.close()
        await client.aclose()
        server.cleanup()


async def test_closing_the_hub_with_viewers_attached_stops_its_tasks_and_resets_its_gauges(log: StreamLog):
    hub = Hub(log)
    run_id = await new_run(log)
    viewers = [asyncio.create_task(collect(hub.subscribe(run_id, START_ID))) for _ in range(3)]
    await eventually(
        lambda: hub_metric("runcast_hub_runs_followed") == 1 and hub_metric("runcast_hub_subscribers") == 3
    )
    await hub.close()
    for viewer in viewers:  # what the server does to its open responses when it shuts down
        viewer.cancel()
    await asyncio.gather(*viewers, return_exceptions=True)
    assert hub_metric("runcast_hub_readers") == 0
    assert hub_metric("runcast_hub_runs_followed") == 0
    assert hub_metric("runcast_hub_subscribers") == 0
    assert not [t for t in hub_tasks() if "reader" in t.get_name() or "janitor" in t.get_name()]
