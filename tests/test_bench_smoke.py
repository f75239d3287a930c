"""The fan-out benchmark at toy size: it must run end to end and account for every event (no timing asserted).

Needs real processes (a gateway, load processes, a throwaway redis-server): skipped only where redis-server is
missing, which CI never is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.histogram import Histogram
from bench.loadgen import LoadRunner, Viewer, entry_int
from tests.support.requirements import require_redis_server

ROOT = Path(__file__).resolve().parent.parent
VIEWERS = 20
RUNS = 6  # the many-runs cell: 6 runs x 1 viewer


@pytest.fixture(scope="module")
def bench_run() -> tuple[str, dict]:
    require_redis_server()
    args = [sys.executable, "-m", "bench.fanout", "--mode", "both", "--viewers", str(VIEWERS), "--idle-viewers", "0"]
    args += ["--duration", "1", "--rate", "10", "--burst-deliveries", "1000", "--phase-timeout", "30"]
    args += ["--many-runs", str(RUNS), "--many-rate", "10", "--runs-sweep", "0"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, f"benchmark failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_prints_the_tables_and_one_json_line(bench_run: tuple[str, dict]) -> None:
    stdout, result = bench_run
    for heading in ("delivered/s", "p50 ms", "p99 ms", "cmds/ev", "KiB/viewer", "hub vs naive", "complete"):
        assert heading in stdout
    for heading in ("many runs, one viewer each", "gw us/dlv", "redis us/ev", "reads/ev"):
        assert heading in stdout
    assert result["bench"] == "fanout"
    cells = [(cell["mode"], cell["feed"], cell["kind"]) for cell in result["cells"]]
    assert cells == [
        ("hub", "hub", "load"),
        ("naive", "direct", "load"),
        ("hub", "hub", "runs"),
        ("naive", "direct", "runs"),
    ]


def test_every_viewer_receives_every_published_event_in_order(bench_run: tuple[str, dict]) -> None:
    _, result = bench_run
    for cell in result["cells"]:
        assert cell["ok"], cell
        if cell["kind"] == "runs":  # R runs x 1 viewer, 10 events each, no burst
            assert cell["connected"] == cell["complete"] == cell["runs"] == RUNS
            assert cell["steady"]["deliveries"] == RUNS * 10 and "burst" not in cell
            # CPU comes in 10 ms ticks: a toy cell can read 0; what matters is that it is measured
            assert cell["steady"]["gateway_us_per_delivery"] >= 0 and cell["steady"]["redis_us_per_event"] >= 0
            continue
        assert cell["connected"] == cell["complete"] == VIEWERS
        assert cell["problems"] == {} and cell["order_errors"] == 0
        steady, burst = cell["steady"], cell["burst"]
        assert steady["events"] == 10 and burst["events"] == burst["events_per_run"] == 50
        assert steady["deliveries"] == VIEWERS * steady["events"]
        assert burst["deliveries"] == VIEWERS * burst["events"]
        assert cell["published_per_run"] == steady["events"] + burst["events"] + 1  # + the terminal event


def test_bench_reports_latency_redis_commands_memory_and_cpu(bench_run: tuple[str, dict]) -> None:
    _, result = bench_run
    for cell in result["cells"]:
        steady = cell["steady"]
        assert steady["gateway_us_per_delivery"] >= 0 and steady["redis_us_per_event"] >= 0  # 10 ms ticks: 0 possible
        assert steady["read_calls_per_event"] >= 0
        assert 0 <= steady["p50_ms"] <= steady["p99_ms"] <= steady["max_ms"]
        assert steady["redis_cmds"]["xadd"] >= steady["events"]  # the publish itself is counted
        assert steady["redis_cmds_per_event"] >= cell["publisher_cmds_per_event"] >= 2  # EVALSHA + its XADD at least
        assert cell["rss_after_kib"] > 0 and isinstance(cell["rss_per_viewer_kib"], float)
        assert len(steady["load_cpu_pct"]) == cell["load_procs"] == 2  # --min-load-procs default
        assert steady["gateway_cpu_pct"] >= 0


def test_histogram_percentiles_are_bucket_upper_bounds() -> None:
    hist = Histogram()
    for ms in range(1, 101):
        hist.add(ms / 1000)
    assert hist.percentile(50) == pytest.approx(0.05002, abs=2e-5)
    assert hist.percentile(99) == pytest.approx(0.09902, abs=2e-5)
    assert hist.percentile(100) == pytest.approx(0.1)
    assert Histogram().percentile(50) is None


def test_entry_ids_order_as_ints_like_redis_orders_them() -> None:
    assert entry_int(b"9-0") < entry_int(b"10-0") < entry_int(b"10-1")


def _sse(entry_id: str, event_type: str = "chunk", published: float = 0.0) -> bytes:
    data = f'{{"type":"{event_type}","data":{{}},"timestamp":{published},"run_id":"r","trace_id":"steady"}}'
    frame = f"id: {entry_id}\nevent: {event_type}\ndata: {data}\n\n".encode()
    return f"{len(frame):x}\r\n".encode() + frame + b"\r\n"


def _viewer_after(frames: list[bytes]) -> tuple[Viewer, LoadRunner]:
    load = LoadRunner(None, "127.0.0.1", 1, [], 1)  # type: ignore[arg-type]
    viewer = Viewer(load, "r", b"")
    viewer.data_received(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for frame in frames:
        viewer.data_received(frame)
    return viewer, load


def _tally(*ids: str) -> tuple[int, int]:
    return len(ids), sum(entry_int(i.encode()) for i in ids)


async def test_viewer_accepts_exactly_the_published_events_and_records_their_latency() -> None:
    viewer, load = _viewer_after([_sse("1-0", published=time.time()), _sse("2-0"), _sse("3-0", "complete")])
    assert viewer.verdict(_tally("1-0", "2-0", "3-0")) is None
    assert load.phases[b'"steady"'].count == 3


async def test_viewer_flags_a_gap_a_duplicate_and_a_missing_terminal_event() -> None:
    gap, _ = _viewer_after([_sse("1-0"), _sse("3-0", "complete")])
    assert gap.verdict(_tally("1-0", "2-0", "3-0")) == "received 2 of 3 events"
    duplicate, _ = _viewer_after([_sse("1-0"), _sse("1-0"), _sse("3-0", "complete")])
    assert "strictly increasing" in (duplicate.verdict(_tally("1-0", "2-0", "3-0")) or "")
    unfinished, _ = _viewer_after([_sse("1-0"), _sse("2-0")])
    assert unfinished.verdict(_tally("1-0", "2-0")) == "no terminal event"


@pytest.mark.slow
def test_bench_frameworks_prints_runcast_and_jaf_side_by_side() -> None:
    """`make bench-frameworks` at toy size: both sides run the same jaf-py agent to the end (no timing asserted)."""
    require_redis_server()
    args = [sys.executable, "-m", "bench.frameworks", "--runs", "1", "--pause-ms", "1"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"benchmark failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert "time to first CHUNK, ms" in done.stdout and "jaf-py run_streaming" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    runcast, jaf = result["runcast (gateway + worker, SSE)"], result["jaf-py run_streaming"]
    assert runcast["chunks"] == [100] and runcast["first_chunk_chars"] == [len("Your")]  # one CHUNK per delta
    assert jaf["chunks"] == [8] and jaf["first_chunk_chars"] == [50]  # jaf slices the final text in 50s
