"""Run ids and Redis stream entry ids: the formats clients may send us, validated before they reach Redis."""

from __future__ import annotations

import re
import uuid

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ENTRY_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$", re.ASCII)  # ASCII: a bare \d admits fullwidth digits
_U64_MAX = 2**64 - 1

START_ID = "0-0"


class BadRunId(ValueError):
    pass


class BadEntryId(ValueError):
    pass


def new_run_id() -> str:
    return uuid.uuid4().hex


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise BadRunId("run id must be 32 lowercase hex characters")
    return run_id


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """Parse `<ms>-<seq>` strictly; entry ids compare as integer tuples, never as strings."""
    match = ENTRY_ID_RE.fullmatch(entry_id) if isinstance(entry_id, str) else None
    if not match:
        raise BadEntryId("event id must look like <milliseconds>-<sequence>, e.g. 1732470000000-0")
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _U64_MAX or seq > _U64_MAX:
        raise BadEntryId("event id is out of range")
    return ms, seq


def entry_key(entry_id: str | bytes) -> tuple[int, int]:
    """Sort key of an id Redis gave us (trusted, so no validation)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
