"""A throwaway 3-master Redis Cluster: three `redis-server --cluster-enabled yes` processes joined by
`redis-cli --cluster create`, each in its own temp dir, all killed and removed at the end.

Every node needs its port and its cluster-bus port (port + 10000) free, so both are checked, and both stay below the
ephemeral port range. Startup takes about a second (most of it `redis-cli` waiting for the nodes to agree).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import redis

from tests.support.redis_server import RedisServer

BUS_OFFSET = 10_000
# Node ports 20000-22767, bus ports 30000-32767: both below Linux's default ephemeral range (32768-60999), so no
# outgoing connection or `free_port()` (bind to port 0) can take one between our check and redis-server's bind.
_PORT_RANGE = (20_000, 22_768)

_NODE_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """`count` ports whose own port and cluster-bus port are both free right now."""
    rng = random.SystemRandom()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(*_PORT_RANGE)
        taken = {p + d for p in chosen for d in (0, BUS_OFFSET)}
        if port in taken or port + BUS_OFFSET in taken:
            continue
        if _port_free(port) and _port_free(port + BUS_OFFSET):
            chosen.append(port)
    return chosen


def cluster_tools_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class LocalCluster:
    """Three masters, no replicas, all 16384 slots assigned. `url` is any node; clients discover the rest."""

    def __init__(self, masters: int = 3) -> None:
        self.masters = masters
        self.nodes: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    def start(self, timeout: float = 20.0) -> LocalCluster:
        try:
            for attempt in range(3):  # a port taken between the check and the bind: pick new ones
                try:
                    self._start_nodes()
                    break
                except RuntimeError:
                    self.cleanup()
                    if attempt == 2:
                        raise
            self._create(timeout)
            self._wait_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_nodes(self) -> None:
        self.nodes = []
        for port in cluster_ports(self.masters):
            node = RedisServer(port=port, extra=_NODE_ARGS)
            self.nodes.append(node)
            node.start()

    def _create(self, timeout: float) -> None:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not on PATH")
        args = [binary, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        args += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")

    def _wait_ok(self, timeout: float) -> None:
        """Every node reports `cluster_state:ok` and knows all masters."""
        deadline = time.monotonic() + timeout
        pending = set(self.ports)
        while pending:
            for port in list(pending):
                client = redis.Redis(port=port, decode_responses=True)
                try:
                    info = client.cluster("INFO")
                    known = int(info.get("cluster_known_nodes", 0)) if isinstance(info, dict) else 0
                    if isinstance(info, dict) and info.get("cluster_state") == "ok" and known == self.masters:
                        pending.discard(port)
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"cluster nodes {sorted(pending)} never reached cluster_state:ok")
            if pending:
                time.sleep(0.05)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True)

    def node_id(self, port: int) -> str:
        with self.node(port) as client:
            return client.execute_command("CLUSTER", "MYID")

    def begin_migration(self, slot: int, src: int, dst: int, keys: list[str]) -> None:
        """`slot` MIGRATING on `src`, IMPORTING on `dst`, `keys` already moved: the state that answers -ASK."""
        with self.node(dst) as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(src))
        with self.node(src) as source:
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(dst))
            if keys:
                source.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)

    def finish_migration(self, slot: int, dst: int) -> None:
        """Hand `slot` to `dst` on every node (no waiting for gossip): old owners now answer -MOVED."""
        dst_id = self.node_id(dst)
        for port in [dst, *(p for p in self.ports if p != dst)]:
            with self.node(port) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    def move_slot(self, slot: int, src: int, dst: int, keys: list[str]) -> None:
        self.begin_migration(slot, src, dst, keys)
        self.finish_migration(slot, dst)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        self.nodes = []
