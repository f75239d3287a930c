"""`StreamingEvent.to_json` writes text chunks directly (the worker's hottest path): the same bytes as json.dumps."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType


def reference(event: StreamingEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), default=str)


@given(
    content=st.text(),
    delta=st.text(),
    complete=st.booleans(),
    count=st.none() | st.integers(min_value=-(2**70), max_value=2**70),
    timestamp=st.floats(allow_nan=False, allow_infinity=False),
    run_id=st.none() | st.text(max_size=40),
    trace_id=st.none() | st.text(max_size=40),
)
def test_a_chunk_encodes_to_exactly_what_json_dumps_gives(content, delta, complete, count, timestamp, run_id, trace_id):
    chunk = StreamingChunk(content, delta, complete, count)
    event = StreamingEvent(StreamingEventType.CHUNK, chunk, timestamp, run_id, trace_id)
    assert event.to_json() == reference(event)
    assert StreamingEvent.from_json(event.to_json()) == StreamingEvent.from_dict(json.loads(reference(event)))


def test_unusual_chunk_values_take_the_general_path_with_the_same_result():
    odd = [
        StreamingChunk("a", "b", True, True),  # a bool count: json says `true`, not `True`
        StreamingChunk("a", "b", False, 3.5),  # type: ignore[arg-type]
        StreamingChunk(123, "b"),  # type: ignore[arg-type]
    ]
    for chunk in odd:
        event = StreamingEvent(StreamingEventType.CHUNK, chunk, 1.5, "r")
        assert event.to_json() == reference(event)
    whole = StreamingEvent(StreamingEventType.CHUNK, StreamingChunk("x", "x"), 2, 7)  # an int timestamp, int run id
    assert whole.to_json() == reference(whole)
