"""The byte -> line -> sseclient-py -> token pipeline, without HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from h2o_sdk import GenerationError, IncompleteStreamError, ProtocolError, Stream, Token
from h2o_sdk._stream import LineReader

from .helpers import CID, error_event, reply_events, token_event

WORDS = ["Héllo", " wörld", " 日本", " 🙂", "!"]
TEXT = "".join(WORDS)


class FakeExchange:
    """A turn (``_stream.Exchange``) whose answer is ``chunks``; records how the stream ended."""

    conversation_id = CID
    aborted = False
    stream_format = "sse"
    final_prefix = ""
    seen_text = ""

    def reattach(self, seen: int) -> None:
        return None  # no HEAD here: a drop ends the stream

    def __init__(self, chunks: Iterable[bytes | BaseException]) -> None:
        self._chunks = chunks
        self.pulled = 0
        self.finished: list[str | None] = []

    def open(self) -> FakeExchange:
        return self

    def chunks(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if isinstance(chunk, BaseException):
                raise chunk
            self.pulled += 1
            yield chunk

    def abort(self) -> bool:
        self.aborted = True
        return True

    def finish(self, outcome: str | None, drain: Any) -> str | None:
        self.finished.append(outcome)
        return None


def make_stream(chunks: Iterable[bytes | BaseException], **kwargs: Any) -> tuple[Stream, FakeExchange]:
    exchange = FakeExchange(chunks)
    return Stream(exchange, **kwargs), exchange


def splits(data: bytes) -> Iterator[list[bytes]]:
    """``data`` cut in two at every offset."""
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_split_offset_gives_the_same_tokens(sep: bytes) -> None:
    body = b"".join(reply_events(WORDS, sep=sep))
    for chunks in splits(body):
        stream, exchange = make_stream(chunks)
        assert list(stream) == WORDS, chunks
        assert stream.reply is not None and stream.reply.text == TEXT
        assert exchange.finished == ["final"]


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_one_byte_per_read(sep: bytes) -> None:
    body = b"".join(reply_events(WORDS, sep=sep))
    stream, _ = make_stream(body[i : i + 1] for i in range(len(body)))
    assert list(stream) == WORDS


def test_multibyte_character_split_at_every_byte() -> None:
    event = token_event(1, "🙂", final="🙂")
    start = event.index("🙂".encode())
    for cut in range(start + 1, start + 4):
        stream, _ = make_stream([event[:cut], event[cut:]])
        assert list(stream) == ["🙂"]


def test_crlf_split_between_cr_and_lf_at_each_line_end() -> None:
    body = b"".join(reply_events(WORDS, sep=b"\r\n"))
    cuts = [i + 1 for i in range(len(body)) if body[i : i + 2] == b"\r\n"]
    assert len(cuts) == 2 * (len(WORDS) + 1)
    for cut in cuts:
        stream, _ = make_stream([body[:cut], body[cut:]])
        assert list(stream) == WORDS


def test_space_after_data_colon_and_comments() -> None:
    events = [e.replace(b"data:", b"data: ", 1) for e in reply_events(WORDS)]
    body = b":\n\n" + events[0] + b": keep-alive\n\n" + b"".join(events[1:])
    stream, _ = make_stream([body])
    assert list(stream) == WORDS


def test_a_bom_before_the_first_event_is_dropped_wherever_it_is_split() -> None:
    body = b"\xef\xbb\xbf" + b"".join(reply_events(WORDS))
    for cut in range(1, 8):
        stream, _ = make_stream([body[:cut], body[cut:]])
        assert list(stream) == WORDS, cut


def test_tokens_arrive_before_the_next_read() -> None:
    events = reply_events(WORDS)
    stream, exchange = make_stream(iter(events))
    for index, text in enumerate(stream):
        assert text == WORDS[index]
        assert exchange.pulled == index + 1  # nothing read ahead of the caller
        if index == len(WORDS) - 1:
            break


def test_tokens_include_the_special_end_token_and_reply_holds_details() -> None:
    details = {"finish_reason": "eos_token", "generated_tokens": 6, "seed": 42}
    stream, _ = make_stream(reply_events(WORDS, details=details), keep_tokens=True)
    tokens = list(stream.tokens())
    assert tokens[-1] == Token(11, "<|endoftext|>", -0.1, True)
    assert [t.text for t in tokens[:-1]] == WORDS
    reply = stream.reply
    assert reply is not None
    assert (reply.finish_reason, reply.generated_tokens, reply.seed) == ("eos_token", 6, 42)
    assert reply.tokens == tuple(tokens) and reply.conversation_id == CID and str(reply) == TEXT


def test_reply_without_details_and_length_finish() -> None:
    # max_new_tokens reached: the last token is ordinary text (protocol.md 3.2)
    body = token_event(1, "Hi", final=None) + token_event(2, " there", final="Hi there")
    stream, _ = make_stream([body])
    assert list(stream) == ["Hi", " there"]
    assert stream.reply is not None and stream.reply.finish_reason is None


def test_empty_token_text_is_yielded_in_order() -> None:
    body = token_event(1, "a") + token_event(2, "") + token_event(3, "b", final="ab")
    stream, _ = make_stream([body])
    assert list(stream) == ["a", "", "b"]


def test_error_event_after_tokens_keeps_the_partial_text() -> None:
    events = reply_events(WORDS)[:2] + [error_event("Request failed during generation: CUDA", "generation")]
    stream, exchange = make_stream(events)
    seen = []
    with pytest.raises(GenerationError) as info:
        seen.extend(stream)
    assert seen == WORDS[:2]
    assert info.value.error_type == "generation"
    assert info.value.text == "".join(WORDS[:2]) and info.value.conversation_id == CID
    assert "CUDA" in str(info.value)
    assert exchange.finished == ["refused"]  # the server ended it: no stop-generating


@pytest.mark.parametrize(
    "tail",
    [b"", b"data:{\"token\":{\"id\":1", b"data:{\"token\":{\"id\":1,\"text\":\"x\"},\"generated_text\":\"x\"}\n"],
    ids=["clean-eof", "mid-line", "no-blank-line"],
)
def test_body_ending_before_the_last_event_is_incomplete(tail: bytes) -> None:
    stream, exchange = make_stream(reply_events(WORDS)[:3] + [tail])
    with pytest.raises(IncompleteStreamError) as info:
        list(stream)
    assert info.value.text == "".join(WORDS[:3])
    assert stream.reply is None
    assert exchange.finished == ["lost"]  # a proxy may have cut it: the server still gets a stop


@pytest.mark.parametrize("data", [b"data:not json\n\n", b"data:[1,2]\n\n", b"data:{\"token\":{\"id\":\"x\"}}\n\n",
                                  b"data:{\"generated_text\":null}\n\n"])
def test_unparsable_events_raise_protocol_error(data: bytes) -> None:
    stream, exchange = make_stream([token_event(1, "a"), data])
    with pytest.raises(ProtocolError) as info:
        list(stream)
    assert info.value.text == "a"
    assert exchange.finished == ["cut"]


def test_oversized_event_is_refused_before_it_is_buffered() -> None:
    endless = (b"data:" + b"x" * 1024 for _ in range(10_000))  # a line that never ends
    stream, exchange = make_stream(endless, max_event_size=64 * 1024)
    with pytest.raises(ProtocolError, match="larger than 65536"):
        list(stream)
    assert exchange.pulled <= 65  # stopped at the bound, not at the end of the body


def test_oversized_multi_line_event_is_refused() -> None:
    lines = (b"data:" + b"y" * 100 + b"\n" for _ in range(10_000))
    stream, exchange = make_stream(lines, max_event_size=10_000)
    with pytest.raises(ProtocolError):
        list(stream)
    assert exchange.pulled < 200


def test_size_bound_counts_across_crlf_split_between_reads() -> None:
    # Every read ends in the CR of a CRLF; the LF that starts the next read is not a blank line.
    line = b"data:" + b"z" * 100
    reads = (b"\n" + line + b"\r" for _ in range(10_000))
    stream, exchange = make_stream(reads, max_event_size=10_000)
    with pytest.raises(ProtocolError):
        list(stream)
    assert exchange.pulled < 200


def test_close_before_start_sends_nothing_and_is_idempotent() -> None:
    opened = []
    stream = Stream(lambda: opened.append(1) or FakeExchange([]))  # type: ignore[func-returns-value]
    stream.close()
    stream.close()
    assert opened == []
    assert list(stream) == []


def test_break_then_close_finishes_once_with_stop() -> None:
    stream, exchange = make_stream(reply_events(WORDS))
    for _ in stream:
        break
    stream.close()
    stream.close()
    assert exchange.finished == ["cut"]
    assert stream.text == WORDS[0]


def test_abandoned_stream_is_finished_by_garbage_collection() -> None:
    exchange = FakeExchange(reply_events(WORDS))
    for _ in Stream(exchange):
        break
    assert exchange.finished == ["cut"]


def test_exception_in_the_loop_body_finishes_the_stream() -> None:
    exchange = FakeExchange(reply_events(WORDS))

    def consume() -> None:
        with Stream(exchange) as stream:
            for _ in stream:
                raise KeyError("caller bug")

    with pytest.raises(KeyError):
        consume()
    assert exchange.finished == ["cut"]


def test_keyboard_interrupt_while_reading_finishes_the_stream() -> None:
    stream, exchange = make_stream([token_event(1, "a"), KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        list(stream)
    assert exchange.finished == ["cut"]


def test_line_reader_ends_every_line_with_lf() -> None:
    lines = list(LineReader([b"data:a\r\ndata:b\rdata:c\n\r", b"\ndata:d\r", b"\n\n"]))
    assert lines == [b"data:a\n", b"data:b\n", b"data:c\n", b"\n", b"data:d\n", b"\n"]


def test_a_long_stream_keeps_its_text_compactly_and_no_tokens_unless_asked() -> None:
    words = [f" w{i}" for i in range(5000)]
    stream, _ = make_stream(reply_events(words))
    assert list(stream) == words
    assert stream.text == "".join(words) and len(stream._state.parts) < 600
    assert stream.reply is not None and stream.reply.tokens == ()


@pytest.mark.parametrize(("field_end", "blank"), [
    (b"\n", b"\r"), (b"\r\n", b"\r"), (b"\r", b"\r\n"), (b"\n", b"\r\n"), (b"\r\n", b"\n"),
], ids=["LF+CR", "CRLF+CR", "CR+CRLF", "LF+CRLF", "CRLF+LF"])  # (CR then LF is one CRLF: no blank line)
def test_mixed_line_endings_give_the_same_tokens_however_the_body_is_cut(field_end: bytes, blank: bytes) -> None:
    # The SSE specification allows any of CRLF, LF and CR for each line (HTML 9.2.5); issue 18.3.
    body = b"".join(e.replace(b"\n\n", field_end + blank) for e in reply_events(WORDS))
    whole, _ = make_stream([body])
    assert list(whole) == WORDS
    bytewise, _ = make_stream(body[i : i + 1] for i in range(len(body)))
    assert list(bytewise) == WORDS
    for chunks in splits(body):
        stream, _ = make_stream(chunks)
        assert list(stream) == WORDS, chunks
