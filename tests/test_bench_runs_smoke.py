"""The many-runs benchmark at toy size: it must run end to end, side by side with a `before` ref, and account for
every run, event and viewer (no timing asserted). Real processes: a gateway, workers, load processes, redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.requirements import require_redis_server

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 5
RUNS = [1, 4]
VIEWERS = [1, 2]
SINGLE = 2


def has_git_history() -> bool:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="module")
def bench_run() -> tuple[str, dict]:
    require_redis_server()
    args = [sys.executable, "-m", "bench.runs", "--runs", "1,4", "--viewers", "1,2", "--single", str(SINGLE)]
    args += ["--tokens", str(TOKENS), "--delay-ms", "5", "--workers", "1", "--capacity-start", "2"]
    args += ["--capacity-max", "2", "--cell-timeout", "60"]
    if has_git_history():
        args += ["--before", "HEAD"]  # the machinery of a side-by-side run (here: the same code twice)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"benchmark failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_prints_the_tables_and_one_json_line(bench_run: tuple[str, dict]) -> None:
    stdout, result = bench_run
    for heading in ("TTFC p50", "pub->recv p50", "length x p50", "worker us/ev", "redis us/ev", "cmds/ev"):
        assert heading in stdout
    assert "CPU seconds per 1,000 published events" in stdout and "capacity of one worker process" in stdout
    assert result["bench"] == "runs"
    designs = ["after", "before"] if has_git_history() else ["after"]
    assert sorted({cell["design"] for cell in result["cells"]}) == designs
    assert sorted((c["design"], c["runs"], c["viewers"]) for c in result["cells"]) == sorted(
        (d, r, v) for d in designs for r in RUNS for v in VIEWERS
    )


def test_every_run_is_exact_and_every_viewer_got_all_of_it(bench_run: tuple[str, dict]) -> None:
    _, result = bench_run
    for cell in result["cells"]:
        runs = SINGLE if cell["runs"] == 1 else cell["runs"]
        assert cell["ok"], cell
        assert cell["runs_created"] == cell["runs_exact"] == runs
        assert cell["viewers_total"] == cell["viewers_complete"] == runs * cell["viewers"]
        assert cell["events"] == runs * (TOKENS + 3)  # start, one chunk per token, metadata, complete
        assert cell["redis_cmds"]["xadd"] == cell["events"]  # every event appended once: no resend duplicated one


def test_bench_reports_latency_run_length_cpu_and_redis_per_event(bench_run: tuple[str, dict]) -> None:
    _, result = bench_run
    for cell in result["cells"]:
        assert 0 < cell["ttfc_p50_ms"] <= cell["ttfc_p99_ms"]
        assert 0 <= cell["latency_p50_ms"] <= cell["latency_p99_ms"]
        assert 0 < cell["length_ratio_p50"] <= cell["length_ratio_p99"]
        assert set(cell["cpu_s_per_1k_events"]) == {"gateway", "worker", "redis", "load"}
        assert cell["redis_cmds_per_event"] >= 1 and cell["worker_us_per_event"] >= 0


def test_capacity_search_tries_one_worker_per_design(bench_run: tuple[str, dict]) -> None:
    _, result = bench_run
    assert [cap["design"] for cap in result["capacity"]] == sorted({c["design"] for c in result["cells"]})
    for cap in result["capacity"]:
        assert [trial["runs"] for trial in cap["trials"]] == [2]
        assert cap["capacity_runs"] in (0, 2)
