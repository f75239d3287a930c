"""Settings from the environment (SPEC §3), prefix `RUNCAST_`."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from runcast.shared.sentinel import SentinelUrl
from runcast.shared.streaming import StreamConfig


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not echo secrets (a Redis URL's password, RUNCAST_SECRET) to logs
    model_config = SettingsConfigDict(env_prefix="RUNCAST_", extra="ignore", hide_input_in_errors=True)

    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="redis://, rediss://, unix:// or redis+sentinel://host:port[,host:port...]/service[/db]",
    )
    redis_cluster: bool = Field(
        False, description="RUNCAST_REDIS_URL names a Redis Cluster node: run streams and meta spread over the cluster"
    )
    queue_redis_url: str | None = Field(
        None, description="plain Redis for the arq job queue (default: RUNCAST_REDIS_URL); required with a cluster"
    )
    secret: SecretStr | None = None
    secret_previous: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="older secrets still accepted when checking tokens (comma-separated), for zero-downtime rotation",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (comma-separated, e.g. https://app.example.com) allowed to call the gateway "
        "from another origin, e.g. useChat in a web app; empty: same-origin only",
    )
    stream_maxlen: int = Field(10_000, ge=1)
    retention_s: int = Field(86_400, ge=1)
    agents: str = "runcast.worker.agents:default_registry"
    model_provider: Literal["scripted", "openai"] = "scripted"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    scripted_delay_ms: int = Field(20, ge=0)
    max_input_bytes: int = Field(64 * 1024, ge=1)
    token_ttl_s: int = Field(86_400, ge=1, description="how long a run's subscribe token stays valid")
    sse_ping_s: float = Field(15.0, gt=0, description="idle heartbeat period on SSE streams")
    viewer_stall_s: float = Field(
        60.0,
        gt=0,
        description="an SSE/WebSocket viewer whose connection takes nothing this long is closed (it resumes)",
    )
    queue_name: str = "runcast:queue"
    feed: Literal["hub", "direct"] = Field(
        "hub", description="gateway read path: `hub` (one live reader per process) or `direct` (one per viewer)"
    )
    hub_queue_size: int = Field(1024, ge=1, description="events a hub subscriber may hold before it is detached")
    hub_history_size: int = Field(2048, ge=0, description="events of each followed run the hub keeps in memory")
    gc_gen0: int = Field(
        50_000, ge=0, description="gateway: allocations between young garbage collections (0: Python's default, 700)"
    )

    chunking: str = Field(
        "passthrough", description="default chunking policy of agents that set none: passthrough | size:N | sentence"
    )
    chunk_max_delay_ms: int = Field(100, ge=0, description="longest a coalesced delta waits before it is published")
    openai_max_retries: int = Field(3, ge=0, description="retries of 429/5xx/connect errors before the first token")
    openai_timeout_s: float = Field(60.0, gt=0, description="connect timeout and longest pause between streamed chunks")

    @field_validator("chunking")
    @classmethod
    def _check_chunking(cls, value: str) -> str:
        StreamConfig.parse(value)
        return value

    # Reliability and limits (README "Reliability", "Security").
    worker_lost_s: float = Field(15.0, gt=0, description="a running run whose worker heartbeat is this stale is lost")
    sweep_interval_s: float | None = Field(
        None, gt=0, description="how often each gateway sweeps running runs for lost workers (default worker_lost_s/3)"
    )
    worker_max_jobs: int = Field(200, ge=1, description="runs one worker process executes at once")
    worker_write_interval_ms: float = Field(
        3.0, ge=0, description="a busy worker sends its runs' events at most this often (one Redis call each time)"
    )
    job_completion_wait_s: int = Field(
        20, ge=0, description="on SIGTERM a worker lets running agents finish this long, then ends them"
    )
    shutdown_grace_s: float = Field(
        3.0, ge=0, description="on SIGTERM a gateway waits this long for its open streams to close"
    )
    redis_retry_s: float = Field(
        30.0, gt=0, description="how long a live stream or a worker append retries a lost Redis before giving up"
    )
    max_viewers_per_run: int = Field(10_000, ge=1, description="open SSE/WebSocket viewers of one run, per gateway")
    max_viewers: int = Field(20_000, ge=1, description="open SSE/WebSocket viewers per gateway process")
    create_rate_limit: int = Field(600, ge=0, description="runs one API key may create per window (0 = no limit)")
    create_rate_window_s: int = Field(60, ge=1, description="the create-rate window, in seconds")
    max_body_bytes: int = Field(
        256 * 1024, ge=1, description="request bodies over this are refused with 413 before they are read"
    )

    # Conversations (docs/chat.md).
    max_history_messages: int = Field(
        200, ge=1, description="most prior messages a run may be given; a conversation keeps its last this many"
    )
    max_history_bytes: int = Field(
        128 * 1024, ge=1, description="largest prior-message history a request may carry (JSON bytes); past it: 413"
    )
    conversation_ttl_s: int = Field(
        7 * 86_400, ge=1, description="a conversation's history expires this long after its last run started or ended"
    )

    @field_validator("api_keys", "secret_previous", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """Lists come from the environment comma-separated (`RUNCAST_API_KEYS=k1,k2`)."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def stream_config(self) -> StreamConfig:
        """The default chunking policy (RUNCAST_CHUNKING, RUNCAST_CHUNK_MAX_DELAY_MS)."""
        return StreamConfig.parse(self.chunking, self.chunk_max_delay_ms)

    @model_validator(mode="after")
    def _queue_off_cluster(self) -> Settings:
        if self.redis_cluster and not self.queue_redis_url:
            raise ValueError(
                "RUNCAST_REDIS_CLUSTER=true needs RUNCAST_QUEUE_REDIS_URL: arq's job queue cannot live on a Redis "
                "Cluster (its enqueue is one MULTI over keys in different slots); point it at a plain Redis"
            )
        return self

    @model_validator(mode="after")
    def _check_sentinel_urls(self) -> Settings:
        for name in ("redis_url", "queue_redis_url"):
            url = getattr(self, name)
            try:
                target = SentinelUrl.parse(url) if url else None
            except ValueError as exc:
                raise ValueError(f"RUNCAST_{name.upper()}: {exc}") from None
            if target is not None and self.redis_cluster and name == "redis_url":
                raise ValueError("RUNCAST_REDIS_CLUSTER=true needs a cluster node's redis:// URL, not a Sentinel URL")
        return self

    @property
    def queue_url(self) -> str:
        """Where the arq job queue lives (gateway enqueues, worker polls)."""
        return self.queue_redis_url or self.redis_url

    @property
    def sweep_every_s(self) -> float:
        return self.sweep_interval_s or max(self.worker_lost_s / 3, 0.1)

    def verify_secrets(self) -> list[bytes]:
        """Every secret a token may be signed with: the current one first, then RUNCAST_SECRET_PREVIOUS."""
        return [self.secret_bytes(), *(s.get_secret_value().encode() for s in self.secret_previous)]

    def secret_bytes(self) -> bytes:
        if self.secret is None or not self.secret.get_secret_value():
            raise RuntimeError("RUNCAST_SECRET is not set: tokens cannot be issued or checked")
        return self.secret.get_secret_value().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
