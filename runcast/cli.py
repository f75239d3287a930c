"""The `runcast` command: demo, gateway, worker, run, tail (SPEC §2)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

WS_MAX_MESSAGE_BYTES = 64 * 1024
"""A viewer only ever sends `{"last_event_id": ...}`: bigger WebSocket messages are refused by the server (1009)."""


def _cmd_demo(args: argparse.Namespace) -> int:
    from runcast.demo import serve_demo

    asyncio.run(serve_demo(args.host, args.port, args.redis_url))
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.settings import get_settings

    settings = get_settings()
    if settings.secret is None or not settings.secret.get_secret_value():
        print(
            "runcast gateway: RUNCAST_SECRET must be set (the HMAC key for run tokens, shared by all gateways)",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        "gateway.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        log_level=args.log_level,
        # SIGTERM: sse-starlette ends open SSE streams at once (clients resume elsewhere with Last-Event-ID); this
        # bounds what is left (WebSockets, slow requests) so a deploy never waits for the runs being watched to end.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
    )
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging.config

    from arq.logs import default_log_config

    from worker.resilient import run_resilient_worker
    from worker.settings import WorkerSettings

    logging.config.dictConfig(default_log_config(verbose=False))
    run_resilient_worker(WorkerSettings)  # arq's Worker, plus a poll loop that outlives a Redis restart
    return 0


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
    gateway.set_defaults(handler=_cmd_gateway)

    worker = commands.add_parser("worker", help="the arq worker that runs agents")
    worker.set_defaults(handler=_cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
