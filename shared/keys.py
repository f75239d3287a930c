"""Redis key layout (SPEC §7). `{run_id}` is a Redis Cluster hash tag: all keys of a run share one slot."""

from __future__ import annotations

PREFIX = "runcast"


def events_key(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:events"


def meta_key(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:meta"


def live_channel(run_id: str) -> str:
    """The run's announce channel: the append script publishes every new entry on it (PUBLISH, or SPUBLISH on a
    cluster, where the `{run_id}` tag puts it in the run's slot), so gateways follow runs without reading streams."""
    return f"{PREFIX}:{{{run_id}}}:live"


def heartbeat_key(run_id: str) -> str:
    """Worker liveness for a running run; a short TTL key refreshed while the agent runs."""
    return f"{PREFIX}:{{{run_id}}}:heartbeat"


def cancel_key(run_id: str) -> str:
    """Set by the gateway to ask the worker running this run to stop."""
    return f"{PREFIX}:{{{run_id}}}:cancel"


def conversation_history_key(conversation_id: str) -> str:
    """A Redis list of the conversation's messages (JSON), oldest first. `{conv:<id>}`: one slot per conversation."""
    return f"{PREFIX}:{{conv:{conversation_id}}}:history"


def conversation_lock_key(conversation_id: str) -> str:
    """The id of the conversation's active run (the run that holds the conversation), in the history's slot."""
    return f"{PREFIX}:{{conv:{conversation_id}}}:active"


def run_id_from_events_key(key: str | bytes) -> str:
    if isinstance(key, bytes):
        key = key.decode()
    return key[key.index("{") + 1 : key.index("}")]


AGENTS_KEY = f"{PREFIX}:agents"
"""Hash agent name -> description, written by every worker at start: the gateway's list of known agents."""
