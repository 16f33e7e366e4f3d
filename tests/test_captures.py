"""Every captured reply of the real chat-ui, read by its family's reader: the right text, or the right error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from h2o_sdk import (
    APIStatusError,
    BadRequestError,
    GenerationError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from h2o_sdk._exceptions import decode_body, status_error
from h2o_sdk._protocol import FAMILIES
from h2o_sdk._stream import Stream

from .captures import Capture, all_captures

FULL = "Hello! I am a fake h2oGPT. How can I help you today?"
REPLIES = ("msg_send", "msg_retry", "msg_edit_user", "rl_msg_1", "rl_msg_2", "rl_legacy_rl_msg_",
           "msg_web_search_noengine", "msg_file", "msg_continue")
STATUS_CLASSES = {400: BadRequestError, 403: PermissionDeniedError, 404: NotFoundError, 405: APIStatusError,
                  413: APIStatusError, 422: UnprocessableEntityError, 429: RateLimitError, 500: InternalServerError}


class Exchange:
    """A turn whose answer is a capture's body, one HTTP chunk per read."""

    aborted = False
    conversation_id = "c"
    final_prefix = ""
    seen_text = ""

    def reattach(self, seen: int) -> None:
        return None  # no HEAD here: a drop ends the stream

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.stream_format = FAMILIES[capture.family].stream
        self.outcome: str | None = None

    def open(self) -> Exchange:
        return self

    def chunks(self) -> Iterator[bytes]:
        return iter(self.capture.chunks)

    def abort(self) -> bool:
        return True

    def finish(self, outcome: str | None, drain: Any) -> str | None:
        self.outcome = outcome
        return None


def expected(capture: Capture) -> tuple[str, Any]:
    """What the client must make of a capture (the table of the captures' READMEs)."""
    family, name = capture.family, capture.name
    if capture.status != 200:
        return "status", STATUS_CLASSES[capture.status]
    if name.startswith(REPLIES):
        return "reply", FULL
    if name == "msg_stream_stopped":
        # 0.4 cuts the body; 0.7 and 0.10 end with the partial text; 0.8 and 0.9 ignore the stop.
        return {"0.4": ("incomplete", None), "0.7": ("reply", "Hello!"), "0.8": ("reply", FULL),
                "0.9": ("reply", FULL), "0.10": ("reply", "Hello!")}[family]
    if name == "head_msg_with_generation_id":
        return "reply", "Hello! I am a "  # the stop's seenContentLength clamps the text
    if name.startswith("upstream_"):
        if family == "0.4":
            return ("generation", "CUDA out of memory") if name == "upstream_stream_error" else ("incomplete", None)
        # An in-band error, whatever follows it (0.7 and 0.8 send a finalAnswer after it).
        message = {"upstream_die": "terminated", "upstream_down": "fetch failed" if family in ("0.7", "0.8", "0.9")
                   else "Connection error.", "upstream_http429": "overloaded" if family != "0.10" else "Rate limit",
                   "upstream_http422": "Input validation error"}.get(name, "CUDA out of memory")
        return "generation", message
    raise AssertionError(f"no expectation for {capture}")


CAPTURED = [c for c in all_captures("msg_", "upstream_", "rl_msg_", "rl_legacy_rl_msg_", "head_msg_")
            if c.entry["method"] == "POST"]


def test_the_table_covers_every_family_and_each_kind_of_answer() -> None:
    assert {c.family for c in CAPTURED} == set(FAMILIES)
    assert {expected(c)[0] for c in CAPTURED} == {"status", "reply", "incomplete", "generation"}
    assert len(CAPTURED) > 100


@pytest.mark.parametrize("capture", CAPTURED, ids=str)
def test_each_captured_answer_gives_what_the_server_meant(capture: Capture) -> None:
    kind, value = expected(capture)
    if kind == "status":
        body = decode_body(capture.body, capture.header("content-type") or "")
        error = status_error(capture.status, body=body, method="POST", url="/conversation/c")
        assert type(error) is value
        message = body.get("message") or body.get("error") if isinstance(body, dict) else body
        assert str(message).strip() and str(message).strip()[:40] in str(error)
        return
    exchange = Exchange(capture)
    if capture.name == "msg_continue" and capture.family == "0.8":
        exchange.final_prefix = FULL  # 0.8 answers a continue with the whole message; the old text is left out
    stream = Stream(exchange, keep_tokens=True)
    if kind == "reply":
        texts = list(stream)
        assert stream.reply is not None and stream.reply.text == value
        assert exchange.outcome == "final"
        if capture.family != "0.4":
            # Padding stripped, pieces joined; a stopped reply's text is what the server kept,
            # which can be less than it streamed (0.7 saves at the stop; HEAD clamps to what was seen).
            assert "".join(texts) == value if value == FULL else "".join(texts).startswith(value)
            assert all(token.id is None and "\x00" not in token.text for token in stream.reply.tokens)
        return
    cls = GenerationError if kind == "generation" else IncompleteStreamError
    with pytest.raises(cls) as info:
        list(stream)
    if value is not None:
        assert value in str(info.value)
    assert exchange.outcome == ("refused" if kind == "generation" else "lost")


@pytest.mark.parametrize(("release", "title", "interrupted"), [
    ("chat-ui-v0.7", "Hello", None),
    ("chat-ui-v0.8.4", "Hello", None),
    ("chat-ui-v0.9.4", "💬 Hello! I am a fake h2oGPT. How can I help you today?", False),  # late, from the model
    ("chat-ui-v0.10.0", "Hello", False),
])
def test_the_title_and_interrupted_flag_reach_the_reply(release: str, title: str, interrupted: bool | None) -> None:
    capture = next(c for c in CAPTURED if c.release == release and c.name == "msg_send")
    stream = Stream(Exchange(capture))
    list(stream)
    assert stream.reply is not None and stream.reply.title == title and stream.reply.interrupted is interrupted


def test_an_upstream_status_reaches_the_generation_error() -> None:
    capture = next(c for c in CAPTURED if c.release == "chat-ui-v0.10.0" and c.name == "upstream_http429")
    with pytest.raises(GenerationError) as info:
        list(Stream(Exchange(capture)))
    assert info.value.status_code == 429


def test_the_v0_7_stream_is_finished_at_final_answer_without_its_end() -> None:
    capture = next(c for c in CAPTURED if c.release == "chat-ui-v0.7" and c.name == "msg_send")
    assert not capture.terminated  # the server never ended it

    def never_ends() -> Iterator[bytes]:
        yield from capture.chunks
        raise AssertionError("the stream waited for more after finalAnswer")

    exchange = Exchange(capture)
    exchange.chunks = never_ends  # type: ignore[method-assign]
    stream = Stream(exchange)
    assert "".join(stream) == FULL
