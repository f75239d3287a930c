"""The seed's chunking vocabulary: `StreamConfig` (how a run's deltas are grouped into CHUNK events) and the
engine-level `StreamChunk`/`ChunkType`. Re-exported by `runcast.shared.streaming`, where the seed has them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ChunkType(str, Enum):
    """What a `StreamChunk` carries (the seed's chunk kinds)."""

    TEXT = "text"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    METADATA = "metadata"
    ERROR = "error"


@dataclass
class StreamChunk:
    """The seed's engine-level chunk: a piece of text (`content` is this piece, not the total) plus bookkeeping."""

    content: str
    chunk_id: str = ""
    sequence_number: int = 0
    is_final: bool = False
    chunk_type: ChunkType = ChunkType.TEXT
    metadata: dict[str, Any] = field(default_factory=dict)


_SIZE_SPEC = re.compile(r"^size:(\d+)$")


@dataclass(frozen=True)
class StreamConfig:
    """How a run's text deltas are grouped into CHUNK events before they are published (the chunking policy).

    - pass-through (`chunk_size <= 1`, no sentence boundaries): every model delta is its own CHUNK.
    - size-based (`chunk_size=N`): deltas are coalesced until at least N characters are pending.
    - sentence (`enable_sentence_boundaries=True`): coalesced until a sentence ends (or `chunk_size` characters,
      when `chunk_size > 1`, as a cap).
    In every mode pending text is published after at most `max_delay_ms` (so a slow model still streams), before
    any non-chunk event, and the first delta after a non-chunk event goes out at once.
    `delay_ms` and `compression_enabled` are kept for seed compatibility; runcast does not pace or compress.
    """

    chunk_size: int = 1
    delay_ms: int = 0
    enable_sentence_boundaries: bool = False
    compression_enabled: bool = False
    max_delay_ms: int = 100

    @property
    def is_passthrough(self) -> bool:
        """Every model delta is its own CHUNK (no coalescing)."""
        return self.chunk_size <= 1 and not self.enable_sentence_boundaries

    @classmethod
    def parse(cls, spec: str, max_delay_ms: int = 100) -> StreamConfig:
        """`passthrough`, `size:N` or `sentence` (the RUNCAST_CHUNKING syntax)."""
        text = spec.strip().lower()
        if text == "passthrough":
            return cls(chunk_size=1, max_delay_ms=max_delay_ms)
        if text == "sentence":
            return cls(chunk_size=0, enable_sentence_boundaries=True, max_delay_ms=max_delay_ms)
        match = _SIZE_SPEC.fullmatch(text)
        if match and int(match.group(1)) >= 1:
            return cls(chunk_size=int(match.group(1)), max_delay_ms=max_delay_ms)
        raise ValueError(f"chunking must be 'passthrough', 'size:N' (N >= 1) or 'sentence', got {spec!r}")
