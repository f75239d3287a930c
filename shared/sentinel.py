"""Redis Sentinel URLs: `redis+sentinel://host:port[,host:port...]/service[/db]` names a primary that Sentinel watches.

The client asks the sentinels for the service's current primary before each new connection (redis-py's
`SentinelConnectionPool`), so after a failover every reconnect lands on the promoted replica; connections still open
to the old primary are closed by `runcast.shared.sentinel_pool.PrimaryWatch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from runcast.shared.sentinel_pool import ResolvingConnection, TrackingSentinelPool

R = TypeVar("R", bound=Redis)

SENTINEL_SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_TIMEOUT_S = 1.0
"""Connect/read timeout towards each sentinel: a dead sentinel costs a second, then the next one is asked."""


@dataclass(frozen=True)
class SentinelUrl:
    """`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]`.

    The credentials before `@` are the data nodes' (primary and replicas); a sentinel protected by its own password
    takes `sentinel_password` (and `sentinel_username`) in the query. Port 26379 when a host gives none.
    """

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SentinelUrl | None:
        """The parsed URL, None when `url` is not a `redis+sentinel://` URL; ValueError when it is one but malformed."""
        if not url.startswith(SENTINEL_SCHEME):
            return None
        rest, _, query = url[len(SENTINEL_SCHEME) :].partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, _, hosts = netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        parts = [part for part in path.split("/") if part]
        if not parts or len(parts) > 2:
            raise ValueError(f"{_redacted(url)}: expected redis+sentinel://host:port[,host:port...]/service[/db]")
        if len(parts) == 2 and not parts[1].isdigit():
            raise ValueError(f"{_redacted(url)}: the database must be a number, got {parts[1]!r}")
        params = {key: values[-1] for key, values in parse_qs(query).items()}
        unknown = set(params) - {"sentinel_username", "sentinel_password"}
        if unknown:
            raise ValueError(f"{_redacted(url)}: unknown option(s) {', '.join(sorted(unknown))}")
        return cls(
            sentinels=[_host_port(item, url) for item in hosts.split(",")],
            service=unquote(parts[0]),
            db=int(parts[1]) if len(parts) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_username=params.get("sentinel_username"),
            sentinel_password=params.get("sentinel_password"),
        )

    def master(self, redis_class: type[R] = Redis, **options: Any) -> R:  # type: ignore[assignment]
        """A client of the service's current primary (`options` as for `redis.asyncio.Redis`)."""
        sentinel_options: dict[str, Any] = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "decode_responses": True,
        }
        if self.sentinel_password:
            sentinel_options |= {"username": self.sentinel_username, "password": self.sentinel_password}
        sentinel = Sentinel(self.sentinels, sentinel_kwargs=sentinel_options)
        return sentinel.master_for(
            self.service,
            redis_class=redis_class,
            connection_class=ResolvingConnection,
            connection_pool_class=TrackingSentinelPool,
            db=self.db,
            username=self.username,
            password=self.password,
            **options,
        )


def _host_port(item: str, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:26379
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"{_redacted(url)}: bad sentinel address {item!r} (expected host:port)")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


def _redacted(url: str) -> str:
    """The URL without its credentials, for error messages."""
    _, at, tail = url.split("?")[0].rpartition("@")
    return f"{SENTINEL_SCHEME}***@{tail}" if at else tail
