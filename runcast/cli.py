"""The `runcast` command: demo, gateway, worker, run, tail (SPEC §2)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

WS_MAX_MESSAGE_BYTES = 64 * 1024
"""A viewer only ever sends `{"last_event_id": ...}`: bigger WebSocket messages are refused by the server (1009)."""


def _agents_from_this_folder() -> None:
    """`RUNCAST_AGENTS=myagents:registry` may name a module of the folder the command runs in, as with `arq` and
    `uvicorn`: a console script's `sys.path` starts with its own bin folder, not the working directory. Appended (as
    arq does), so a local file never shadows an installed package."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def _cmd_demo(args: argparse.Namespace) -> int:
    from runcast.demo import serve_demo

    _agents_from_this_folder()
    asyncio.run(serve_demo(args.host, args.port, args.redis_url))
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from runcast.shared.settings import get_settings

    settings = get_settings()
    if settings.secret is None or not settings.secret.get_secret_value():
        print(
            "runcast gateway: RUNCAST_SECRET must be set (the HMAC key for run tokens, shared by all gateways)",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        "runcast.gateway.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        log_level=args.log_level,
        backlog=args.backlog,
        # SIGTERM: sse-starlette ends open SSE streams at once (clients resume elsewhere with Last-Event-ID); this
        # bounds what is left (WebSockets, slow requests) so a deploy never waits for the runs being watched to end.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
    )
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging.config

    from arq.logs import default_log_config

    from runcast.worker.resilient import run_resilient_worker
    from runcast.worker.settings import WorkerSettings

    logging.config.dictConfig(default_log_config(verbose=False))
    _agents_from_this_folder()
    _use_uvloop()  # before arq's Worker creates its loop
    run_resilient_worker(WorkerSettings)  # arq's Worker, plus a poll loop that outlives a Redis restart
    return 0


def _use_uvloop() -> None:
    """uvloop (installed with uvicorn[standard]) when available: a worker's timers, task switches and socket writes
    per token cost a fraction of asyncio's (measured: see docs/performance.md)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - plain asyncio works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _cmd_run(args: argparse.Namespace) -> int:
    from runcast.follow import run_command

    return run_command(args.url, args.api_key, args.agent, args.input, as_json=args.json)


def _cmd_tail(args: argparse.Namespace) -> int:
    from runcast.follow import tail_command

    return tail_command(args.url, args.run_id, args.token, args.from_id, as_json=args.json)


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("RUNCAST_URL", "http://127.0.0.1:8000"),
        help="the gateway (or load balancer) base URL; default $RUNCAST_URL or http://127.0.0.1:8000",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per event instead of a view")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runcast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="gateway + worker in one process, embedded fakeredis")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--redis-url", default=None, help="use this Redis instead of the embedded fakeredis")
    demo.set_defaults(handler=_cmd_demo)

    gateway = commands.add_parser("gateway", help="the HTTP gateway under uvicorn")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8000)
    gateway.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    gateway.add_argument("--log-level", default="info")
    gateway.add_argument("--backlog", type=int, default=2048, help="listen backlog (the kernel caps it at somaxconn)")
    gateway.set_defaults(handler=_cmd_gateway)

    worker = commands.add_parser("worker", help="the arq worker that runs agents")
    worker.set_defaults(handler=_cmd_worker)

    run = commands.add_parser("run", help="create a run through a gateway and follow it live")
    run.add_argument("agent", metavar="AGENT")
    run.add_argument("input", metavar="INPUT")
    _add_client_options(run)
    run.add_argument(
        "--api-key", default=os.environ.get("RUNCAST_API_KEY"), help="API key when the gateway requires one"
    )
    run.set_defaults(handler=_cmd_run)

    tail = commands.add_parser("tail", help="follow one run live, resuming on disconnect")
    tail.add_argument("run_id", metavar="RUN_ID")
    tail.add_argument("--from", dest="from_id", metavar="EVENT_ID", default=None, help="start after this event id")
    tail.add_argument("--token", default=os.environ.get("RUNCAST_TOKEN"), help="the run's token ($RUNCAST_TOKEN)")
    _add_client_options(tail)
    tail.set_defaults(handler=_cmd_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
