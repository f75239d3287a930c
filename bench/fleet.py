"""Load processes driven over `multiprocessing` Pipes: start them, ask all of them the same thing, stop them."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any


class BenchError(RuntimeError):
    pass


class ProcessFleet:
    """One `spawn`ed process per share; `ask` sends one message to each and waits for one reply from each."""

    def __init__(self) -> None:
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []

    def spawn(self, target: Callable[..., None], shares: Sequence[tuple[Any, ...]], name: str = "bench-load") -> None:
        """Start `target(conn, *share)` once per share."""
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        for p, share in enumerate(shares):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(child, *share), name=f"{name}-{p}", daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.pid is not None]

    def _ask(self, message: tuple[Any, ...] | None, expect: str, timeout: float) -> list[tuple[Any, ...]]:
        if message is not None:
            for conn in self.conns:
                conn.send(message)
        deadline = time.monotonic() + timeout
        replies = []
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"{proc.name} gave no '{expect}' reply within {timeout:.0f} s")
            try:
                reply = conn.recv()
            except EOFError:
                raise BenchError(f"{proc.name} died (exit code {proc.exitcode})") from None
            if reply[0] != expect:
                raise BenchError(f"{proc.name} answered {reply[0]!r}, expected {expect!r}")
            replies.append(reply)
        return replies

    async def ask(self, message: tuple[Any, ...] | None, expect: str, limit_s: float) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._ask, message, expect, limit_s)

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("exit",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join(3)
        for conn in self.conns:
            conn.close()
