"""The SSE benchmark's client: stamping chunks and splitting them afterwards gives what splitting
each chunk on arrival gave (each ``id:`` with the stamp of the chunk that completed its line)."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from bench.sse_fanout import SseClient, arrivals

STREAM = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    b"2a\r\nretry: 3000\n: stream of run r1\n\n\r\n"
    b'40\r\nid: 1700000000000-0\nevent: RunRequested\ndata: {"a": 1}\n\n\r\n'
    b'3e\r\nid: 1700000000001-0\nevent: RunStarted\ndata: {"b": 2}\n\n\r\n'
    b'40\r\nid: 1700000000002-5\nevent: StepProgress\ndata: {"c": 3}\n\n\r\n'
    b'30\r\nevent: end\ndata: {"runId": "r1"}\n\n\r\n0\r\n\r\n'
)


def eager(chunks: list[tuple[float, bytes]]) -> list[tuple[str, float]]:
    """An independent oracle: each ``id:`` line of the whole stream with the stamp of the chunk
    holding the newline that ends it (where a client splitting on arrival would have seen it)."""
    whole = b"".join(data for _, data in chunks)
    ends, offset = [], 0
    for stamp, data in chunks:
        offset += len(data)
        ends.append((offset, stamp))
    received, start = [], 0
    for line in whole.split(b"\n")[:-1]:
        newline_at = start + len(line)
        if line.startswith(b"id: "):
            received.append((line[4:].strip().decode(), next(t for end, t in ends if newline_at < end)))
        start = newline_at + 1
    return received


@given(st.lists(st.integers(1, len(STREAM) - 1), unique=True, max_size=12))
def test_arrivals_match_splitting_on_arrival_wherever_the_chunks_break(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [(float(k), STREAM[a:b]) for k, (a, b) in enumerate(pairwise(bounds))]
    got = arrivals(chunks)
    assert got == eager(chunks)
    assert [i for i, _ in got] == ["1700000000000-0", "1700000000001-0", "1700000000002-5"]


@given(st.lists(st.integers(1, len(STREAM) - 1), unique=True, max_size=12))
def test_the_client_signals_opened_and_ended_wherever_the_chunks_break(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    signals = {"opened": asyncio.Event(), "ended": asyncio.Event()}
    client = SseClient("/", signals, {"n": 1, "opened": 0, "ended": 0})
    for a, b in pairwise(bounds):
        client.feed(STREAM[a:b])
        assert client.ended == (b"\nevent: end" in STREAM[:b])  # as soon as the line is in
        assert client.opened == (b"\nid: " in STREAM[:b] and STREAM[:b].index(b"\nid: ") < b - 20)
    assert signals["opened"].is_set() and signals["ended"].is_set()
    assert [i for i, _ in arrivals(client.chunks)] == [i for i, _ in eager(client.chunks)]
