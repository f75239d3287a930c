"""`runcast run` and `runcast tail` as a user runs them: real subprocesses against a real gateway and worker process
(real Redis). Output is plain text when stdout is not a terminal; mistakes are one line on stderr with exit code 2."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from dataclasses import dataclass

import httpx
import pytest
from rich.console import Console

from runcast.shared.client import ResetEvent, StreamItem
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streaming import (
    StreamingChunk,
    StreamingError,
    StreamingEvent,
    StreamingEventType,
    StreamingMetadata,
    StreamingToolCall,
    StreamingToolResult,
)
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from runcast.terminal import LiveView, PlainView, Progress
from tests.support.hub import eventually
from tests.support.ports import free_port
from tests.support.processes import TEST_SECRET, GatewayProcess, WorkerProcess
from tests.support.proxy import SeveringProxy
from tests.support.sse import create_run, read_sse

TEXT = "Streams  from the worker, through Redis, to your terminal."
LONG = " ".join(f"w{i}" for i in range(100))  # ~2 s at 20 ms a token: long enough to cut mid-run on a busy machine


@pytest.fixture(scope="module")
def deployment(gateway_proc: GatewayProcess, worker_proc: WorkerProcess) -> str:
    return gateway_proc.url


@dataclass
class Done:
    code: int
    out: str
    err: str


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCAST_")}
    return {**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


async def runcast(*args: str) -> Done:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runcast.cli", *args, env=cli_env(), stdout=-1, stderr=-1, stdin=-3
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return Done(proc.returncode or 0, out.decode(), err.decode())


def text_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith("[")]


async def test_run_creates_a_run_and_prints_its_text_and_events_as_plain_text(deployment: str):
    done = await runcast("run", "echo", TEXT, "--url", deployment)
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == "[start] agent=echo model=scripted"
    assert text_lines(done.out) == [TEXT]
    assert lines[-2].startswith("[metadata] agent=echo turns=1")
    assert lines[-1] == "[complete]"
    assert "\x1b[" not in done.out, "no terminal escapes when stdout is a pipe"
    run_id = done.err.split()[2]
    assert f"runcast tail {run_id} --url {deployment} --token " in done.err


async def test_tail_replays_a_finished_run_and_from_an_event_id_gives_exactly_the_rest(
    deployment: str, http: httpx.AsyncClient
):
    run = await create_run(http, deployment, "echo", TEXT)
    whole = await read_sse(http, deployment, run["run_id"], run["token"])

    done = await runcast("tail", run["run_id"], "--token", run["token"], "--url", deployment)
    assert done.code == 0, done.err
    assert text_lines(done.out) == [TEXT] and done.out.splitlines()[-1] == "[complete]"

    k = 4
    rest = await runcast(
        "tail", run["run_id"], "--from", whole[k - 1].id, "--token", run["token"], "--url", deployment, "--json"
    )
    assert rest.code == 0, rest.err
    printed = [json.loads(line) for line in rest.out.splitlines()]
    assert [(p["id"], p["type"], p["event"]) for p in printed] == [(e.id, e.event, e.data) for e in whole[k:]]


async def test_tail_resumes_after_the_connection_is_cut_with_no_gap_or_duplicate(
    deployment: str, http: httpx.AsyncClient
):
    run = await create_run(http, deployment, "echo", " ".join(f"w{i}" for i in range(300)))  # ~6 s at 20 ms a token
    async with SeveringProxy(httpx.URL(deployment).port) as proxy:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runcast.cli", "tail", run["run_id"], "--token", run["token"], "--url", proxy.url,
            "--json", env=cli_env(), stdout=-1, stderr=-1, stdin=-3,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        printed: list[dict] = []

        async def read_lines() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                printed.append(json.loads(line))

        reader = asyncio.create_task(read_lines())
        async with asyncio.timeout(60):
            for cut in range(2):  # cut each connection once it is streaming, while the run is surely still going
                seen = len(printed)
                await eventually(
                    lambda cut=cut, seen=seen: len(proxy.requests) == cut + 1 and len(printed) >= seen + 3,
                    within_s=20,
                    what=f"connection {cut + 1} to stream",
                )
                status = (await http.get(run["status_url"], params={"token": run["token"]})).json()["status"]
                assert status == "running", "the cut must land mid-run"
                proxy.sever()
            await reader
            err = (await proc.stderr.read()).decode()
            code = await proc.wait()
    whole = await read_sse(http, deployment, run["run_id"], run["token"])
    assert code == 0, err
    assert [(p["id"], p["event"]) for p in printed] == [(e.id, e.data) for e in whole]
    assert err.count("connection lost") == 2, err
    assert len(proxy.requests) == 3


async def test_tail_of_a_run_ended_with_an_error_event_prints_it_and_exits_1(
    deployment: str, http: httpx.AsyncClient, module_redis_url: str
):
    run = await create_run(http, deployment, "echo", LONG)
    tail = asyncio.create_task(runcast("tail", run["run_id"], "--token", run["token"], "--url", deployment))
    await asyncio.sleep(0.5)
    redis = redis_from_url(module_redis_url)
    try:
        assert await StreamLog(redis).end_run(run["run_id"], "cancelled", "stopped by the test") is not None
    finally:
        await redis.aclose()
    done = await tail
    assert done.code == 1
    assert done.out.splitlines()[-1] == "[error] cancelled: stopped by the test"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "echo", "x", "--url", "not a url"], "gateway URL must look like http://host:port"),
        (["run", "echo", "x", "--url", "http://127.0.0.1:{free}"], "cannot reach the gateway at http://127.0.0.1:"),
        (["run", "no-such-agent", "x", "--url", "{url}"], "not found (404): unknown agent 'no-such-agent'"),
        (["tail", "{run_id}", "--token", "forged.token", "--url", "{url}"], "refused the credentials (401)"),
        (["tail", "{other_run_id}", "--token", "{token}", "--url", "{url}"], "is not for run"),
        (["tail", "not-a-run", "--token", "{token}", "--url", "{url}"], "run id must be 32 lowercase hex characters"),
        (["tail", "{run_id}", "--url", "{url}"], "needs its token: --token"),
        (
            ["tail", "{run_id}", "--from", "yesterday", "--token", "{token}", "--url", "{url}"],
            "event id must look like",
        ),
        (["tail", "{run_id}", "--token", "{token}", "--url", "http://127.0.0.1:{free}"], "cannot reach the gateway"),
    ],
)
async def test_mistakes_are_one_line_on_stderr_with_exit_code_2(
    deployment: str, http: httpx.AsyncClient, args: list[str], message: str
):
    run = await create_run(http, deployment, "echo", "a b")
    other = await create_run(http, deployment, "echo", "c d")
    values = {
        "url": deployment,
        "free": str(free_port()),
        "run_id": run["run_id"],
        "token": run["token"],
        "other_run_id": other["run_id"],
    }
    done = await runcast(*[arg.format(**values) for arg in args])
    assert done.code == 2
    assert done.out == ""
    assert len(done.err.strip().splitlines()) == 1, done.err
    assert done.err.startswith("runcast: ") and message in done.err, done.err


async def test_tail_of_an_unknown_run_says_not_found(deployment: str, http: httpx.AsyncClient):
    unknown = "e" * 32
    done = await runcast(
        "tail", unknown, "--token", issue_token(TEST_SECRET.encode(), unknown, 60), "--url", deployment
    )
    assert done.code == 2 and done.out == ""
    assert done.err.strip() == "runcast: not found (404): no such run (unknown, or expired after its retention period)"


def handoff_items() -> list[StreamItem]:
    def item(n: int, kind: StreamingEventType, data: object) -> StreamItem:
        return StreamItem(f"1-{n}", StreamingEvent(kind, data))  # type: ignore[arg-type]

    return [
        item(0, StreamingEventType.START, StreamingMetadata("triage", "scripted")),
        item(1, StreamingEventType.CHUNK, StreamingChunk("Handing over.", "Handing over.")),
        item(2, StreamingEventType.AGENT_SWITCH, {"from_agent": "triage", "to_agent": "demo"}),
        item(3, StreamingEventType.TOOL_CALL, StreamingToolCall("calculator", {"expression": "6 * 7"}, "c1")),
        item(4, StreamingEventType.TOOL_RESULT, StreamingToolResult("calculator", "c1", 42, "completed", 0.5)),
        StreamItem(None, ResetEvent("trimmed", "1-4", "1-9")),
        item(9, StreamingEventType.CHUNK, StreamingChunk("42", "The answer is 42.\nDone")),
        item(10, StreamingEventType.ERROR, StreamingError("cancelled", "stopped")),
    ]


def test_plain_view_prints_every_event_type_on_its_own_line():
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(Progress("f" * 32), out, err)
    for item in handoff_items():
        view.show(item)
    view.close()
    assert out.getvalue().splitlines() == [
        "[start] agent=triage model=scripted",
        "Handing over.",
        "[agent_switch] triage -> demo",
        '[tool_call] calculator {"expression": "6 * 7"} (c1)',
        "[tool_result] calculator -> 42 (0.5 ms)",
        "[reset] events after 1-4 were trimmed; continuing from 1-9",
        "The answer is 42.",
        "Done",
        "[error] cancelled: stopped",
    ]


def test_live_view_draws_tool_cards_switches_and_a_status_line_on_a_terminal():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, height=30, color_system=None)
    progress = Progress("f" * 32, agent="triage", status="running")
    view = LiveView(progress, console)
    for item in handoff_items():
        view.show(item)
    progress.status = "cancelled"
    view.close()
    text = screen.getvalue()
    for expected in (
        "triage · scripted",
        "Handing over.",
        "agent switch: triage → demo",
        "tool · calculator",
        'arguments {"expression": "6 * 7"}',
        "result    42",
        "trimmed; continuing from 1-9",
        "The answer is 42.",
        "error · cancelled",
        "● cancelled · run ffffffff · agent triage",
    ):
        assert expected in text, expected
