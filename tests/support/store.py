"""Make a real redis-server refuse writes the way production ones do: memory full (OOM at `maxmemory` with the
`noeviction` policy) and failing persistence (MISCONF)."""

from __future__ import annotations

import shutil
import time

import redis

from tests.support.redis_server import RedisServer

FILLER = "test:filler"
MAXMEMORY = 64 * 1024 * 1024
CHUNK = 256 * 1024
MARGIN = 1024 * 1024


def full_memory_server() -> RedisServer:
    """A redis-server with a 64 MB `maxmemory`, `noeviction` (what runcast needs: README), whose RDB saves can be
    made to fail (`FailingDisk`)."""
    memory = ["--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction"]
    return RedisServer(extra=[*memory, "--dbfilename", "dump.rdb", "--save", "3600 1"])


class FullMemory:
    """Fill Redis with a filler key until it answers OOM, then give the memory back.

    Filling to the limit leaves used memory hovering at it: buffers freed after the refused command let the next
    small write through now and then. To keep Redis full for the whole fault, `fill` then sets `maxmemory` 1 MB under
    what is used (the filler is many MB, so deleting it gives memory back either way); `give_back` deletes the
    filler and restores the limit."""

    def __init__(self, server: RedisServer) -> None:
        self.admin = redis.Redis(port=server.port)
        self.limit = int(self.admin.config_get("maxmemory")["maxmemory"])
        self.refusals = 0

    def fill(self) -> None:
        while True:
            try:
                self.admin.append(FILLER, b"x" * CHUNK)
            except redis.exceptions.OutOfMemoryError:
                break
        used = int(self.admin.info("memory")["used_memory"])
        self.admin.config_set("maxmemory", used - MARGIN)
        self.assert_refusing()

    def assert_refusing(self) -> None:
        try:
            self.admin.set("test:probe", "1")
        except redis.exceptions.OutOfMemoryError:
            self.refusals += 1
            return
        raise AssertionError("Redis took a write although its memory is full")

    def give_back(self) -> None:
        self.admin.delete(FILLER)
        self.admin.config_set("maxmemory", self.limit)
        self.admin.set("test:probe", "1")  # writes are taken again


class FailingDisk:
    """RDB saves fail (the dump file's name is taken by a non-empty directory: the final rename fails, even for
    root), so with `stop-writes-on-bgsave-error yes` (the default) and a save point set Redis answers every write with
    MISCONF until a save succeeds again."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.admin = redis.Redis(port=server.port)
        self.blocker = server.dir / "dump.rdb"

    def break_disk(self) -> None:
        (self.blocker / "keep").mkdir(parents=True, exist_ok=True)
        self._save_until("err")
        try:
            self.admin.set("test:probe", "1")
        except redis.exceptions.ResponseError as exc:
            assert "unable to persist" in str(exc), exc  # MISCONF
            return
        raise AssertionError("Redis took a write although its saves fail")

    def fix_disk(self) -> None:
        shutil.rmtree(self.blocker)
        self._save_until("ok")
        self.admin.set("test:probe", "1")

    def _save_until(self, status: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self.admin.info("persistence")
            if not info["rdb_bgsave_in_progress"]:
                if info["rdb_last_bgsave_status"] == status:
                    return
                try:
                    self.admin.bgsave()
                except redis.exceptions.ResponseError:  # one is already running
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"the RDB save status did not become {status!r}")
