"""Real runcast processes (`runcast gateway`, `runcast worker`) on loopback, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port

TEST_SECRET = "test-secret-for-runcast-only"

LIMITED_API_KEY = "retry-test-key"
LIMITED_ENV = {
    "RUNCAST_MAX_VIEWERS_PER_RUN": "1",  # the next viewer of a run gets 503 + Retry-After: 1
    "RUNCAST_API_KEYS": LIMITED_API_KEY,
    "RUNCAST_CREATE_RATE_LIMIT": "1",  # one create per key per 2 s window: 429 + Retry-After
    "RUNCAST_CREATE_RATE_WINDOW_S": "2",
}
"""A gateway that refuses on purpose, for the client retry tests (`limited_gateway` fixture)."""


def runcast_env(redis_url: str, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RUNCAST_REDIS_URL": redis_url,
            "RUNCAST_SECRET": TEST_SECRET,
            "RUNCAST_SCRIPTED_DELAY_MS": "20",
            "RUNCAST_JOB_COMPLETION_WAIT_S": "1",  # test processes stop fast; tests of the grace period set their own
            "RUNCAST_SHUTDOWN_GRACE_S": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class Process:
    """A child process whose output goes to a temp log file (shown when a test fails to start it)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None):
        self.args = args
        self.env = env
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix="runcast-proc-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.wait()


class GatewayProcess(Process):
    def __init__(self, redis_url: str, port: int | None = None, log_level: str = "warning", **env: str):
        self.port = port or free_port()
        args = [
            sys.executable,
            "-m",
            "runcast.cli",
            "gateway",
            "--port",
            str(self.port),
            "--log-level",
            log_level,
        ]
        super().__init__(args, runcast_env(redis_url, **env))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        super().start()
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"gateway exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become ready:\n{self.log()}")


class WorkerProcess(Process):
    def __init__(self, redis_url: str, **env: str):
        super().__init__([sys.executable, "-m", "runcast.cli", "worker"], runcast_env(redis_url, **env))

    def start(self, timeout: float = 20.0) -> WorkerProcess:
        super().start()
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ready once it has logged its start line
            if not self.alive():
                raise RuntimeError(f"worker exited:\n{self.log()}")
            if "runcast worker ready" in self.log():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker did not start:\n{self.log()}")


def start_all(*procs: GatewayProcess | WorkerProcess, timeout: float = 30.0) -> None:
    """Launch every process first, then wait for each: start-up (mostly imports) overlaps instead of adding up."""
    for proc in procs:
        Process.start(proc)
    for proc in procs:
        proc.wait_ready(timeout)
