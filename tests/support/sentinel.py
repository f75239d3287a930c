"""A real Redis Sentinel deployment for tests: a primary, a replica and one sentinel, three `redis-server` processes.

One sentinel with a quorum of 1 is enough to fail over (a production deployment runs three or more). The timings are
small so that a failover takes ~1-2 s: the sentinel calls the primary down after `down_after_ms` without a reply,
then promotes the replica. `url` is the `redis+sentinel://` URL runcast processes are configured with.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

Address = tuple[str, int]


class SentinelTrio:
    def __init__(
        self,
        service: str = "runcast",
        *,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        appendonly: bool = True,
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # `appendfsync always`: what a node acknowledged survives its own restart (the fault under test is losing
        # the node, not its disk).
        # `repl-diskless-sync-delay 0`: a replica's full sync starts at once, not after Redis' default 5 s wait.
        extra = ["--repl-diskless-sync-delay", "0", *(["--appendfsync", "always"] if appendonly else [])]
        self.primary = RedisServer(appendonly=appendonly, extra=extra)
        self.replica = RedisServer(appendonly=appendonly, extra=list(extra))
        self.sentinel_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="runcast-sentinel-"))
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}/0"

    def start(self) -> SentinelTrio:
        self.primary.start()
        self.replica.extra += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        self._wait(lambda: self._info(self.replica.port).get("master_link_status") == "up", "the replica to sync")
        conf = self.dir / "sentinel.conf"  # sentinel rewrites its config file: it must be its own and writable
        conf.write_text(
            "\n".join(
                [
                    f"port {self.sentinel_port}",
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"logfile {self.dir / 'sentinel.log'}",
                    f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1",
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {self.service} 1",
                    "",
                ]
            )
        )
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.sentinel = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait(self._sentinel_sees_the_replica, "the sentinel to discover the primary and its replica")
        return self

    def _sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, decode_responses=True, socket_timeout=1)

    def _info(self, port: int) -> dict:
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            return client.info("replication")
        except redis.RedisError:
            return {}
        finally:
            client.close()

    def _sentinel_sees_the_replica(self) -> bool:
        with self._sentinel() as sentinel:
            try:
                replicas = sentinel.sentinel_slaves(self.service)
            except redis.RedisError:
                return False
        return any(not (r["is_sdown"] or r["is_odown"]) and r["port"] == self.replica.port for r in replicas)

    def primary_address(self) -> Address:
        """Where the sentinel says the primary is now."""
        with self._sentinel() as sentinel:
            host, port = sentinel.sentinel_get_master_addr_by_name(self.service)
        return host, int(port)

    def node_url(self, address: Address | None = None) -> str:
        """A plain redis:// URL of one node (the current primary by default), for checks a test makes directly."""
        host, port = address or self.primary_address()
        return f"redis://{host}:{port}/0"

    def kill_primary(self) -> Address:
        """SIGKILL the primary process (no shutdown, no last write); returns its address."""
        old = self.primary_address()
        server = self.primary if old[1] == self.primary.port else self.replica
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)
        return old

    def force_failover(self) -> None:
        """`SENTINEL FAILOVER`: promote the replica now and demote the (live) primary to a replica of it. Right after
        start the sentinel may not have the replica's INFO yet (NOGOODSLAVE): ask again until it does."""

        def accepted() -> bool:
            with self._sentinel() as sentinel:
                try:
                    return bool(sentinel.sentinel_failover(self.service))
                except redis.ResponseError as exc:
                    if "NOGOODSLAVE" in str(exc):
                        return False
                    raise

        self._wait(accepted, "the sentinel to accept a failover")

    def wait_for_failover(self, old: Address, timeout_s: float = 30.0) -> Address:
        """Block until the failover is over (the sentinel has switched the service to the promoted replica, the
        address clients get from `SENTINEL MASTERS`, and that node answers as a primary); returns its address."""

        def switched() -> Address | None:
            try:
                with self._sentinel() as sentinel:
                    state = sentinel.sentinel_master(self.service)
            except redis.RedisError:
                return None
            address = (state["ip"], int(state["port"]))
            done = state["is_master"] and not (state["is_sdown"] or state["is_odown"])
            done = done and "failover_in_progress" not in state["flags"]
            if done and address != old and self._info(address[1]).get("role") == "master":
                return address
            return None

        self._wait(lambda: switched() is not None, "the sentinel to promote the replica", timeout_s)
        address = switched()
        assert address is not None
        return address

    def sentinel_log(self) -> str:
        path = self.dir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def _wait(predicate, what: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def cleanup(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait(10)
        self.sentinel = None
        self.primary.cleanup()
        self.replica.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
