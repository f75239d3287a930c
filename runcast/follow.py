"""`runcast run` and `runcast tail`: create and/or follow a run through a gateway, with one-line errors.

Exit codes: 0 the run completed; 1 it ended with an `error` event (failed or cancelled); 2 the command could not do
its job (bad URL, unreachable gateway, bad token, unknown run, bad arguments); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from runcast.shared.client import (
    AuthenticationError,
    BadRequest,
    GatewayUnavailable,
    PermissionDenied,
    RetryPolicy,
    RuncastClient,
    RuncastError,
    RunHandle,
    RunNotFound,
)
from runcast.shared.ids import BadEntryId, BadRunId, check_run_id, parse_entry_id
from runcast.terminal import Progress, RunView, final_status, make_view

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

QUICK = RetryPolicy(max_retries=2, budget_s=3.0)
"""The first requests of `run` and `tail`: a mistyped URL is said within a second, a brief 503 or 429 is waited out
(longer outages are the stream's job, which retries with the client's full policy)."""


def describe(exc: RuncastError, url: str, run_id: str | None = None) -> str:
    """One line that says what went wrong and what to check."""
    code = f" ({exc.status_code})" if exc.status_code else ""
    if isinstance(exc, GatewayUnavailable):
        return exc.detail
    if isinstance(exc, AuthenticationError):
        return f"the gateway refused the credentials{code}: {exc.detail}"
    if isinstance(exc, PermissionDenied):
        return f"this token is not for run {run_id}{code}: {exc.detail}"
    if isinstance(exc, RunNotFound):
        return f"not found{code}: {exc.detail}"
    if isinstance(exc, BadRequest):
        return f"bad request{code}: {exc.detail}"
    return f"gateway error{code}: {exc.detail}"


async def follow(client: RuncastClient, run_id: str, token: str, from_id: str | None, view: RunView) -> int:
    """Stream the run into the view until its terminal event; the exit code says how the run ended."""
    progress = view.progress

    def on_retry(failures: int, delay: float, exc: Exception) -> None:
        progress.status = "reconnecting"
        view.note(
            f"connection lost ({exc or type(exc).__name__}); resuming after {stream.last_event_id or 'the start'}"
            f" in {delay:.1f}s"
        )

    stream = client.stream(run_id, token, last_event_id=from_id, on_retry=on_retry)
    code = EXIT_OK
    async for item in stream:
        progress.events += 1
        progress.reconnects = stream.reconnects
        progress.last_event_id = stream.last_event_id
        if item.type == "start":
            progress.agent = getattr(item.event.data, "agent_name", "") or progress.agent
        if item.is_terminal:
            progress.status = final_status(item)
            code = EXIT_OK if item.type == "complete" else EXIT_RUN_FAILED
        elif progress.status in ("connecting", "queued", "reconnecting"):
            progress.status = "running"
        view.show(item)
    return code


async def _session(
    url: str,
    api_key: str | None,
    out: TextIO,
    err: TextIO,
    as_json: bool,
    *,
    create: tuple[str, str] | None = None,
    run_id: str | None = None,
    token: str | None = None,
    from_id: str | None = None,
) -> int:
    try:
        client = RuncastClient(url, api_key=api_key)
    except RuncastError as exc:
        err.write(f"runcast: {exc.detail}\n")
        return EXIT_USAGE
    view: RunView | None = None
    progress = Progress(run_id or "", started=time.monotonic())
    try:
        async with client:
            if create is not None:
                handle: RunHandle = await client.create_run(*create, retry=QUICK)
                run_id, token = handle.run_id, handle.token
                progress.run_id, progress.agent = run_id, create[0]
                err.write(
                    f"runcast: run {run_id} (agent {create[0]}); follow it again with:\n"
                    f"  runcast tail {run_id} --url {url} --token {token}\n"
                )
            assert run_id is not None and token is not None
            status = await client.status(run_id, token, retry=QUICK)  # fails fast on URL, token or run mistakes
            progress.agent, progress.status = status.get("agent", ""), status.get("status", "queued")
            view = make_view(progress, out, err, as_json=as_json)
            return await follow(client, run_id, token, from_id, view)
    except RuncastError as exc:
        if view is not None:
            view.close()
            view = None
        err.write(f"runcast: {describe(exc, url, run_id)}\n")
        return EXIT_USAGE
    finally:
        if view is not None:
            view.close()


def run_command(url: str, api_key: str | None, agent: str, text: str, *, as_json: bool = False) -> int:
    return _main(_session(url, api_key, sys.stdout, sys.stderr, as_json, create=(agent, text)))


def tail_command(url: str, run_id: str, token: str | None, from_id: str | None, *, as_json: bool = False) -> int:
    try:
        check_run_id(run_id)
        if from_id is not None:
            parse_entry_id(from_id)
    except (BadRunId, BadEntryId) as exc:
        sys.stderr.write(f"runcast: {exc}\n")
        return EXIT_USAGE
    if not token:
        sys.stderr.write("runcast: reading a run needs its token: --token T (or RUNCAST_TOKEN)\n")
        return EXIT_USAGE
    return _main(_session(url, None, sys.stdout, sys.stderr, as_json, run_id=run_id, token=token, from_id=from_id))


def _main(session: object) -> int:
    try:
        return asyncio.run(session)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        sys.stderr.write("runcast: interrupted\n")
        return EXIT_INTERRUPTED
