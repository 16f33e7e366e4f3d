"""Property-based tests of the stream pipeline (hypothesis).

- A valid body cut at any boundaries, with any line ending, gives the same tokens.
- Any garbage gives either a reply or an ``H2oError``: never another exception,
  never a hang, and memory bounded by the event size limit.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2o_sdk import H2oError, Stream

from .test_stream import FakeExchange

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def event(tid: int, text: str, sep: bytes, final: str | None = None, special: bool = False) -> bytes:
    obj = {"token": {"id": tid, "text": text, "logprob": -0.5, "special": special}, "generated_text": final,
           "details": None}
    return b"data:" + json.dumps(obj, ensure_ascii=False).encode() + sep + sep


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (any order, repeats allowed)."""
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@SETTINGS
@given(
    words=st.lists(texts, min_size=1, max_size=8),
    sep=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    comments=st.booleans(),
    bom=st.booleans(),
)
def test_valid_bodies_cut_anywhere_give_the_same_tokens(
    words: list[str], sep: bytes, points: list[int], comments: bool, bom: bool
) -> None:
    parts = [event(i, word, sep) for i, word in enumerate(words)]
    if comments:
        parts.insert(len(parts) // 2, b":" + sep + sep)  # a keep-alive comment
    parts.append(event(99, "<|endoftext|>", sep, final="".join(words), special=True))
    body = (b"\xef\xbb\xbf" if bom else b"") + b"".join(parts)
    stream = Stream(FakeExchange(cut(body, points)), keep_tokens=True)
    tokens = list(stream.tokens())
    assert [t.text for t in tokens] == [*words, "<|endoftext|>"]
    assert stream.reply is not None and stream.reply.text == "".join(words)


fragments = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"data:", b"data: ", b"\n", b"\r", b"\r\n", b"\n\n", b":", b"event: x\n", b"id: 1\n",
                     b"retry: 5\n", b"{", b"}", b"[", b"]", b"\"", b"\\", b"\xff", b"\xc3", b"null", b"1e999",
                     b'{"token":', b'{"id":1,"text":"a"}', b'"generated_text":"x"', b'{"error":"e"}',
                     b'"special":true', b"\x00", b"\xef\xbb\xbf"]),
)


@SETTINGS
@given(pieces=st.lists(fragments, max_size=60), points=st.lists(st.integers(0, 10_000), max_size=20))
def test_garbage_gives_a_reply_or_an_h2o_error(pieces: list[bytes], points: list[int]) -> None:
    body = b"".join(pieces)
    stream = Stream(FakeExchange(cut(body, points) if body else []), max_event_size=512)
    try:
        for _ in stream.tokens():
            pass
    except H2oError:
        return
    assert stream.reply is not None


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=1_000, max_value=400_000), newline_every=st.integers(0, 50_000))
def test_memory_stays_bounded_by_the_event_size_limit(size: int, newline_every: int) -> None:
    # One endless event (or many long lines of one): refused once past the bound, never buffered whole.
    line = b"data:" + b"x" * (newline_every or size) + b"\n"

    def body() -> Any:
        sent = 0
        while sent < size:
            yield line
            sent += len(line)

    tracemalloc.start()
    try:
        stream = Stream(FakeExchange(body()), max_event_size=4096)
        with contextlib.suppress(H2oError):
            list(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4096 * 4 + 2 * len(line) + 64 * 1024
