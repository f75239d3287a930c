"""deploy/nginx.conf run for real on loopback in front of gateway processes: the compose load balancer, no docker."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port

NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


class LoadBalancer:
    """The committed nginx.conf with only addresses and file paths rewritten: upstreams point at `gateway_ports`."""

    def __init__(self, gateway_ports: list[int]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="runcast-nginx-"))
        conf = NGINX_CONF.read_text()
        for n, port in enumerate(gateway_ports, start=1):
            conf = conf.replace(f"gateway-{n}:8000", f"127.0.0.1:{port}")
        conf = (
            conf.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
            .replace("worker_processes auto;", "worker_processes 1;")
            .replace("access_log /dev/stdout", f"access_log {self.dir}/access.log")
            .replace("error_log /dev/stderr", f"error_log {self.dir}/error.log")
        )
        self.conf_path = self.dir / "nginx.conf"
        self.conf_path.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text() if path.exists() else ""

    def start(self, binary: str, timeout: float = 15.0) -> LoadBalancer:
        args = [binary, "-p", str(self.dir), "-c", str(self.conf_path), "-e", str(self.dir / "error.log")]
        globals_ = f"daemon off; pid {self.dir}/nginx.pid;"
        check = subprocess.run([*args, "-t", "-g", globals_], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t rejected deploy/nginx.conf:\n{check.stderr}")
        self.proc = subprocess.Popen([*args, "-g", globals_], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not come up: {(self.dir / 'error.log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
