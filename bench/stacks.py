"""A runcast deployment for the runs benchmark: redis-server + `runcast gateway` + W x `runcast worker`, real processes.

Two designs can run side by side in one invocation: `after` is this checkout; `before` is the code of another git
ref (`--before main`, a commit, ...), extracted with `git archive` and imported ahead of this checkout's editable
install (a `runcast/` package whose `shared`, `worker`, `gateway` are links into the extracted tree, first on
PYTHONPATH and the processes' working directory). Both stacks stay up for the whole benchmark, each on its own
redis-server, and cells alternate between them, so both see the same machine load.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.procs import RedisSnapshot, cpu_s, redis_snapshot, start_redis
from tests.support.processes import GatewayProcess, Process, WorkerProcess, start_all
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("gateway", "worker", "redis")


@dataclass(frozen=True)
class Design:
    name: str  # "after" (this checkout) | "before"
    label: str  # what it is, for the report
    pythonpath: Path | None = None  # the extracted package root of a `before` ref; None = this checkout


def extract_ref(ref: str) -> Design:
    """The `before` design: `ref`'s code extracted from git into a temp dir, importable as `runcast`."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="runcast-before-"))
    src = root / "src"
    src.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    package = root / "pkg" / "runcast"
    shutil.copytree(src / "runcast", package)
    for sub in ("shared", "worker", "gateway"):
        (package / sub).symlink_to(src / sub, target_is_directory=True)
    return Design("before", f"{ref} ({commit})", root / "pkg")


def cleanup_design(design: Design) -> None:
    if design.pythonpath is not None:
        shutil.rmtree(design.pythonpath.parent, ignore_errors=True)


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]  # process kind -> CPU seconds (all processes of that kind)
    redis: RedisSnapshot


@dataclass
class RunStack:
    """One deployment of one design; `snapshot()` reads CPU per process kind and Redis counters."""

    design: Design
    workers: int
    delay_ms: int
    env: dict[str, str] = field(default_factory=dict)
    server: RedisServer | None = None
    gateway: GatewayProcess | None = None
    worker_procs: list[WorkerProcess] = field(default_factory=list)
    admin: redis.Redis | None = None

    def start(self) -> RunStack:
        self.server = start_redis(maxclients=20_000)
        env = {
            "RUNCAST_SCRIPTED_DELAY_MS": str(self.delay_ms),
            "RUNCAST_CREATE_RATE_LIMIT": "0",  # the benchmark creates thousands of runs from one client
            "RUNCAST_MAX_VIEWERS_PER_RUN": "1000000",
            "RUNCAST_MAX_VIEWERS": "1000000",
            **self.env,
        }
        if self.design.pythonpath is not None:
            env["PYTHONPATH"] = str(self.design.pythonpath)
        self.gateway = GatewayProcess(self.server.url, **env)
        self.gateway.args += ["--backlog", "4096"]
        self.worker_procs = [WorkerProcess(self.server.url, **env) for _ in range(self.workers)]
        procs: list[Process] = [self.gateway, *self.worker_procs]
        for proc in procs:
            proc.cwd = self.design.pythonpath  # `python -m` puts the cwd first on sys.path
        start_all(self.gateway, *self.worker_procs, timeout=60)
        self.admin = redis.Redis(port=self.server.port)
        return self

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    def pids(self) -> dict[str, list[int]]:
        assert self.gateway is not None and self.server is not None and self.server.proc is not None
        return {
            "gateway": [self.gateway.pid],
            "worker": [proc.pid for proc in self.worker_procs],
            "redis": [self.server.proc.pid],
        }

    def check_alive(self) -> None:
        for proc in [self.gateway, *self.worker_procs]:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{self.design.name}: {proc.args[3]} exited:\n{proc.log()[-2000:]}")

    def snapshot(self) -> Snapshot:
        assert self.admin is not None
        cpu = {kind: sum(cpu_s(pid) for pid in pids) for kind, pids in self.pids().items()}
        return Snapshot(time.time(), cpu, redis_snapshot(self.admin))

    def stop(self) -> None:
        for proc in [self.gateway, *self.worker_procs]:
            if proc is not None:
                proc.stop(timeout=5)
        if self.admin is not None:
            self.admin.close()
        if self.server is not None:
            self.server.cleanup()
