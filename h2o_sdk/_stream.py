"""Bytes from the socket -> lines -> tokens: the stream object.

This module never opens a connection. A :class:`Stream` drives an
:class:`Exchange` (a ``_lifecycle.Turn``), which sends the prompt and hands
back the body's byte chunks as they arrive, and cleans up on the server.
The body is read one of two ways, as the server's family says: TGI
server-sent events through sseclient-py (``"0.4"``; only this module sees
``sseclient`` events), or chat-ui's JSON-lines updates (``"0.7"`` on).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, Protocol

from sseclient import SSEClient

from ._events import Event
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    GenerationError,
    H2oError,
    IncompleteStreamError,
    ProtocolError,
    StreamError,
)
from ._protocol import parse_event, reply_fields
from ._protocol._updates import FINAL, OTHER, STREAM, TITLE, parse_update, sources, to_events
from ._resource import Resource
from ._types import Reply, Token

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "Exchange", "LineReader", "Stream", "json_lines"]

#: The largest event (bytes between two blank lines) a stream accepts.
DEFAULT_MAX_EVENT_SIZE = 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_COMPACT_EVERY = 512
_BLANK = (b"\n", b"\r", b"\r\n")
# How a reply ended, as the stream reports it to its turn (``_lifecycle.Event`` values).
_FINAL, _REFUSED, _LOST, _CUT = "final", "refused", "lost", "cut"


def _too_large(what: str, limit: int) -> str:
    return (f"a stream {what} is larger than {limit} bytes, the client's max_event_size; "
            "pass a larger Client(max_event_size=...) to accept it")


class _Truncated(Exception):
    """The body ended in the middle of an event."""


class LineReader:
    """The lines of an event-stream body as bytes, each ended by ``\\n``.

    Built for sseclient-py, which finds event boundaries by looking at the
    line endings of what it has gathered (``\\r\\r``, ``\\n\\n`` or
    ``\\r\\n\\r\\n``), so a body whose lines end in different ways, as the SSE
    specification allows (a field line ended by LF and the blank line by CR,
    say), would be split into events depending on how it arrived (issue
    18.3). Every line is therefore handed on ended by one ``\\n``, whatever
    ended it (CRLF, LF or CR: HTML living standard, 9.2.5). A line is yielded
    as soon as its terminator arrives; a partial line waits for the rest,
    which costs nothing because no event is complete before its blank line.

    A line ending in ``\\r`` is yielded at once, because a bare CR is a
    complete line ending and waiting for a possible ``\\n`` would stall CR-only
    streams; if the next read starts with ``\\n``, that ``\\n`` is the tail of a
    CRLF and is dropped.

    Args:
        chunks: The body's bytes, in whatever pieces the network delivers.
        max_event_size: The largest event accepted, in bytes.

    Raises:
        ProtocolError: An event grew past ``max_event_size``.
        _Truncated: The body ended in the middle of an event (private: the
            stream turns it into :class:`IncompleteStreamError`). Raising,
            rather than ending, keeps sseclient-py from dispatching the
            truncated event, as the SSE specification requires.
    """

    def __init__(self, chunks: Iterable[bytes], max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._chunks = chunks
        self._max = max_event_size

    def __iter__(self) -> Iterator[bytes]:
        limit = self._max
        pending = b""  # a partial line, waiting for its terminator
        event_size = 0  # bytes of the event under way
        after_cr = False  # the last line ended in a bare CR
        head: bytes | None = b""  # the body's first bytes until the BOM is ruled in or out
        for chunk in self._chunks:
            if head is not None:
                head += chunk
                if len(head) < len(_BOM) and _BOM.startswith(head):
                    continue
                chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
                head = None
            if pending:
                chunk = pending + chunk
                pending = b""
            elif not event_size and chunk[-2:] == b"\n\n" and b"\r" not in chunk and len(chunk) <= limit:
                # The common case: a read holding whole LF-terminated events. Its
                # lines, endings kept, go on as one piece.
                after_cr = False
                yield chunk
                continue
            lines = chunk.splitlines(True)
            if lines and lines[-1][-1:] not in b"\r\n":
                pending = lines.pop()
                if event_size + len(pending) > limit:
                    raise ProtocolError(_too_large("event", limit))
            for line in lines:
                if after_cr and line == b"\n":
                    # The tail of a CRLF whose CR ended the previous read.
                    after_cr = False
                    continue
                after_cr = line[-1:] == b"\r"
                if line in _BLANK:
                    event_size = 0
                    yield b"\n"
                    continue
                event_size += len(line)
                if event_size > limit:
                    raise ProtocolError(_too_large("event", limit))
                yield line if line[-2:] != b"\r\n" and line[-1:] == b"\n" else line.rstrip(b"\r\n") + b"\n"
        if pending or event_size or head:
            raise _Truncated()


def json_lines(chunks: Iterable[bytes], max_line_size: int = DEFAULT_MAX_EVENT_SIZE) -> Iterator[str]:
    """The non-blank lines of a JSON-lines body, stripped and decoded (protocol-eras.md 9.3).

    Stripping takes off the 4096 spaces chat-ui writes after ``finalAnswer``
    (without a newline, so ``finished`` arrives glued to them). A line is
    yielded as soon as its newline arrives; chat-ui writes one update per
    chunk, so the common read is exactly one line.

    Raises:
        ProtocolError: A line grew past ``max_line_size``, or is not UTF-8.
        _Truncated: The body ended in the middle of an update.
    """
    pending = b""
    for chunk in chunks:
        if pending:
            chunk = pending + chunk
            pending = b""
        if chunk[-1:] == b"\n" and chunk.count(b"\n") == 1:
            lines = [chunk]  # the common case: one whole update
        else:
            lines = chunk.split(b"\n")
            pending = lines.pop()
            if len(pending) > max_line_size:
                if pending.strip():
                    raise ProtocolError(_too_large("line", max_line_size))
                pending = b""  # padding: nothing to keep
        for line in lines:
            if len(line) > max_line_size:
                raise ProtocolError(_too_large("line", max_line_size))
            text = line.strip()
            if text:
                try:
                    decoded = text.decode()
                except UnicodeDecodeError as exc:
                    raise ProtocolError(f"the stream is not valid UTF-8: {exc}") from exc
                yield decoded
    tail = pending.strip()
    if tail:
        # The last line need not end in a newline, but one cut in the middle is not an update.
        try:
            last = tail.decode()
            json.loads(last)
        except (ValueError, RecursionError):
            raise _Truncated() from None
        yield last


class Exchange(Protocol):
    """One prompt's life on the server, as the stream drives it (``_lifecycle.Turn``)."""

    conversation_id: str | None
    #: How the body is read, known once :meth:`open` has returned: ``"sse"`` or ``"jsonl"``.
    stream_format: str
    #: What the ``finalAnswer`` text repeats before the reply (a continue in 0.8), to leave out.
    final_prefix: str
    #: The reply's text as the caller saw it, set before :meth:`finish` (HEAD's stop point).
    seen_text: str

    @property
    def aborted(self) -> bool:
        """:meth:`abort` was called."""
        ...

    def open(self) -> Any:
        """Send the prompt; return the answer, whose ``chunks()`` are the body's bytes."""
        ...

    def abort(self) -> bool:
        """Cut the turn short from any thread (never raises); ``False`` if it finishes in the background."""
        ...

    def reattach(self, seen: int) -> Any:
        """After a dropped connection, the rest of the run as server-sent events, or ``None`` (chat-ui HEAD)."""
        ...

    def finish(self, outcome: str | None, drain: Callable[[], None] | None) -> str | None:
        """Report how the reply ended, clean up on the server, return what it stored; never raises.

        Args:
            outcome: ``"final"``, ``"refused"`` (the server ended it), ``"lost"``
                (the connection broke) or ``"cut"`` (this side ended it).
            drain: Reads the rest of the reply, if the turn wants it.
        """
        ...


class Stream(Resource):
    """A reply, token by token, as it arrives.

    Iterating yields the text (``str``) of each non-special token.
    :meth:`tokens` iterates the same stream as :class:`Token` objects, the
    final special token included. Once the stream has finished, :attr:`reply`
    holds the :class:`Reply`.

    Nothing is sent until the first item is asked for. Leaving the ``with``
    block, :meth:`close`, ``break`` followed by garbage collection, an
    exception in the loop body and ``KeyboardInterrupt`` all close the
    connection and delete the server conversation (after asking the server to
    stop generating when the reply was cut short).

    Example::

        with client.stream("Write a haiku about rivers") as stream:
            for text in stream:
                print(text, end="", flush=True)
        print(stream.reply.finish_reason)

    ``reply.tokens`` holds every token only when the stream was made with
    ``keep_tokens=True``, or with ``keep_tokens=None`` (what ``chat()`` uses)
    where tokens carry more than their text (``"0.4"``: ids, log-probabilities);
    otherwise it is empty, since the caller had each token as it arrived, and a
    long stream does not hold them twice.

    A stream belongs to one thread at a time.

    Raises (while iterating):
        APIStatusError: The server refused a request.
        APIConnectionError: The network failed (``APITimeoutError`` when the
            server went silent for longer than the read timeout).
        GenerationError: The server sent an in-band error event.
        IncompleteStreamError: The stream ended before its last event.
        ProtocolError: An event was not valid, or larger than the bound.
    """

    def __init__(
        self,
        exchange: Exchange,
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        keep_tokens: bool | None = False,
        on_end: Callable[[str | None, str, str | None], None] | None = None,
    ) -> None:
        # The generator holds the state, never the Stream: without a reference
        # cycle, a stream abandoned after ``break`` is finished (and its
        # conversation deleted) as soon as the loop lets go of it.
        self._state = _State(keep_tokens, exchange)
        self._generator = _run(self._state, exchange, max_event_size, on_end)

    @property
    def reply(self) -> Reply | None:
        """The :class:`Reply` once the last event has arrived; ``None`` before."""
        return self._state.reply

    @property
    def conversation_id(self) -> str | None:
        """The server conversation's id, once it has been created."""
        return self._state.exchange.conversation_id

    @property
    def text(self) -> str:
        """The reply's text received so far (all of it once finished)."""
        return self._state.text()

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        generator = self._generator
        while True:
            token = next(generator)
            if token.__class__ is Token and not token.special:
                return token.text

    def tokens(self) -> Iterator[Token]:
        """Iterate the rest of this stream as :class:`Token` objects."""
        if not self._state.want_events:
            return self._generator
        return (item for item in self._generator if item.__class__ is Token)

    def _items(self) -> Iterator[Any]:
        """Tokens, and events once :meth:`events` was called (``AsyncStream``'s reader thread)."""
        return self._generator

    def events(self) -> Iterator[Event]:
        """Iterate the rest of this stream as every update the server sends, typed.

        Yields :class:`Token` objects and, from chat-ui 0.7 on, what comes
        between them: :class:`Status`, :class:`Title`, :class:`WebSearch`,
        :class:`ToolCall`, :class:`ToolResult`, :class:`ToolError`,
        :class:`Reasoning`, :class:`File`, :class:`RouterMetadata`, and
        :class:`Unknown` for an update type this SDK does not know. The
        ``finalAnswer`` ends it (:attr:`reply`); an error status raises, as
        iterating does. ``"0.4"`` streams only tokens.

        Example::

            with conversation.stream("Latest news?", web_search=True) as stream:
                for event in stream.events():
                    if isinstance(event, h2o_sdk.WebSearch):
                        print("searching:", event.message, *event.args)
                    elif isinstance(event, h2o_sdk.Token):
                        print(event.text, end="")
            print(stream.reply.sources)
        """
        self._state.want_events = True
        return self._generator

    def close(self) -> None:
        """Stop reading, close the connection and clean up on the server.

        Idempotent; does nothing to the server if the stream never started.
        Call it from the thread that iterates; from any other thread use
        :meth:`abort`.
        """
        self._generator.close()

    def abort(self) -> None:
        """Cut the stream short from any thread.

        The thread iterating the stream is woken even if it is blocked waiting
        for the server (the connection is shut down); its iteration then ends
        with :class:`IncompleteStreamError` after the usual cleanup
        (stop-generating, then delete). Thread-safe, idempotent, never raises.
        A conversation being created is never cut (the server may have made
        it already): the iterating thread finishes that request, deletes the
        conversation and ends.
        """
        self._abort()

    def _abort(self) -> bool:
        """:meth:`abort`; ``False`` when the iterating thread finishes a create first."""
        return self._state.exchange.abort()


    def __repr__(self) -> str:
        state = "finished" if self.reply is not None else f"{self._state.count} tokens"
        return f"<Stream conversation={self.conversation_id!r} {state}>"



class _State:
    """What a stream has received; shared by the Stream and its generator."""

    __slots__ = ("count", "ended", "exchange", "keep_tokens", "others", "parts", "reply", "sources", "title", "tokens",
                 "want_events")

    def __init__(self, keep_tokens: bool | None, exchange: Exchange) -> None:
        self.parts: list[str] = []
        self.keep_tokens = keep_tokens
        self.tokens: list[Token] | None = [] if keep_tokens is not False else None
        self.count = 0
        self.reply: Reply | None = None
        self.exchange = exchange
        self.title: str | None = None
        self.sources: tuple[Mapping[str, str], ...] = ()
        self.want_events = False  # events() was called: yield what is not a token too
        self.others = 0  # updates read besides tokens, keepAlive left out (for :attr:`seq`)
        self.ended: str | None = None  # how a followed run ended, as HEAD's `end` event says

    @property
    def conversation_id(self) -> str | None:
        return self.exchange.conversation_id

    @property
    def seq(self) -> int:
        """Updates read, keepAlive left out: chat-ui HEAD's sequence numbers (counted off the token path)."""
        return self.count + self.others

    def add(self, token: Token) -> None:
        self.count += 1
        if self.tokens is not None:
            self.tokens.append(token)
        if not token.special:
            parts = self.parts
            parts.append(token.text)
            if len(parts) >= _COMPACT_EVERY:
                # One small str per token costs ~13x its text; joined, a long
                # stream's text costs about its own size.
                parts[:] = ["".join(parts)]

    def text(self) -> str:
        return "".join(self.parts)

    def error(self, cls: type[StreamError], message: str) -> StreamError:
        return cls(message, text=self.text(), conversation_id=self.conversation_id)

    def annotate(self, exc: StreamError) -> None:
        exc.text = self.text()
        exc.conversation_id = self.conversation_id


def _run(
    state: _State,
    exchange: Exchange,
    max_event_size: int,
    on_end: Callable[[str | None, str, str | None], None] | None,
) -> Generator[Any, None, None]:
    try:
        body = exchange.open()
    except BaseException:
        if on_end is not None:
            on_end(None, "", None)
        raise
    if state.keep_tokens is None and exchange.stream_format == "jsonl":
        state.tokens = None  # chat-ui's updates carry only text: the reply's text holds it all
    # Unless the stream learns otherwise, this side cut it short: break,
    # close(), an exception in the caller's loop, Ctrl-C.
    outcome = _CUT
    events: Iterator[Any] | None = None
    current: list[Iterator[str]] = []  # the updates being read (HEAD: a run followed again)
    try:
        if exchange.stream_format == "jsonl":
            outcome = yield from _follow(state, exchange, body, max_event_size, current)
        else:
            events = SSEClient(iter(LineReader(body.chunks(), max_event_size))).events()
            outcome = yield from _read_events(state, events)
        if outcome == _FINAL:
            return
        outcome = _ended(exchange)
        if state.ended == "gone":
            raise _early_end(state, exchange, "the connection dropped and the server no longer has the generation")
        raise _early_end(state, exchange, "the stream ended before its last event")
    except _Truncated:
        outcome = _ended(exchange)
        raise _early_end(state, exchange, "the stream ended in the middle of an event") from None
    except UnicodeDecodeError as exc:  # sseclient-py decodes each line
        raise state.error(ProtocolError, f"the stream is not valid UTF-8: {exc}") from exc
    except GenerationError as exc:
        outcome = _REFUSED  # the server ended the generation
        state.annotate(exc)
        raise
    except StreamError as exc:
        state.annotate(exc)  # parse errors and the size bound know nothing of the text so far
        raise
    except APITimeoutError:
        raise  # this side gave up waiting: a cut
    except APIConnectionError as exc:
        # A cut connection cannot be told from a broken network: it still gets a stop.
        outcome = _ended(exchange)
        raise _early_end(state, exchange, f"the stream was cut: {exc}") from exc
    finally:
        stored = None
        if current:
            events = current[-1]
        try:
            exchange.seen_text = state.text()
            drain = None if events is None else lambda: _drain(events, state, exchange.stream_format == "jsonl")
            stored = exchange.finish(outcome, drain)
        finally:  # even if a second Ctrl-C lands here
            if on_end is not None:
                on_end(stored, state.reply.text if state.reply is not None else state.text(), state.title)


def _read_events(state: _State, events: Iterator[Any]) -> Generator[Token, None, str]:
    """TGI events to tokens, up to the last one; the outcome (``""``: the body ended first)."""
    for event in events:
        token, final = parse_event(event.data)
        state.add(token)
        if final is not None:
            state.reply = Reply(
                **reply_fields(final),
                tokens=tuple(state.tokens) if state.tokens is not None else (),
                conversation_id=state.conversation_id,
            )
            yield token
            return _FINAL
        yield token
    return ""


def _follow(
    state: _State, exchange: Exchange, body: Any, max_event_size: int, current: list[Iterator[str]]
) -> Generator[Any, None, str]:
    """chat-ui's updates up to ``finalAnswer``, following the run again where the connection drops (HEAD).

    chat-ui HEAD keeps generating when a connection drops and replays the run
    from any sequence number as server-sent events (protocol-eras.md 8.5); the
    prompt is never sent again. Elsewhere a drop ends the stream as before.
    """
    lines: Iterator[str] = json_lines(body.chunks(), max_event_size)
    current.append(lines)
    while True:
        error: BaseException | None = None
        try:
            outcome = yield from _read_updates(state, lines)
        except APITimeoutError:
            raise  # this side gave up waiting: a cut, not a drop
        except (_Truncated, APIConnectionError) as exc:
            outcome, error = "", exc
        if outcome == _FINAL or state.ended is not None:
            return outcome
        again = None if exchange.aborted else exchange.reattach(state.seq)
        if again is None:
            if error is not None:
                raise error
            return outcome
        lines = _replayed(again.chunks(), max_event_size, state)
        current.append(lines)


def _replayed(chunks: Iterable[bytes], max_event_size: int, state: _State) -> Iterator[str]:
    """The update lines of HEAD's ``/stream`` replay after ``state.seq``; its ``end`` event sets ``state.ended``.

    The replay is real SSE: ``id: n`` / ``event: update`` / ``data: {update}``,
    ``: heartbeat`` comments, then ``event: end`` / ``data: {"status"}``.
    """
    for event in SSEClient(iter(LineReader(chunks, max_event_size))).events():
        if event.event == "end":
            try:
                status = json.loads(event.data).get("status")
            except (ValueError, AttributeError):
                status = None
            state.ended = status if isinstance(status, str) else "unknown"
            return
        if event.event != "update":
            continue
        if event.id and event.id.isdigit():
            if int(event.id) <= state.seq:
                continue  # seen already
            state.others = int(event.id) - 1 - state.count  # _read_updates counts this one
        yield event.data


def _read_updates(state: _State, lines: Iterator[str]) -> Generator[Any, None, str]:
    """chat-ui updates to tokens (and events, when asked), up to ``finalAnswer``; the outcome.

    The outcome is ``""`` when the body ended first. Nothing after
    ``finalAnswer`` is waited for: v0.7 never ends its body.
    """
    for line in lines:
        kind, value = parse_update(line)
        if kind == STREAM:
            token = Token(None, value)
            state.add(token)
            yield token
        elif kind == FINAL:
            interrupted = value.get("interrupted")
            found = state.sources
            grounded = sources(value.get("webSources"), "uri")  # 0.9.3 on: a grounded model's sources
            if grounded:
                seen = {s["url"] for s in found}
                found += tuple(s for s in grounded if s["url"] not in seen)
            text = value["text"]
            prefix = state.exchange.final_prefix
            if prefix and text.startswith(prefix):
                text = text[len(prefix):]
            state.reply = Reply(
                text,
                tokens=tuple(state.tokens) if state.tokens is not None else (),
                conversation_id=state.conversation_id,
                title=state.title,
                interrupted=interrupted if isinstance(interrupted, bool) else None,
                sources=found,
            )
            return _FINAL
        elif kind == TITLE:
            state.others += 1
            state.title, update = value
            if state.want_events:
                yield from to_events(update, state.title)
        elif kind == OTHER:
            if value.get("status") != "keepAlive":  # HEAD's run does not keep them (head_stream_reattach_*)
                state.others += 1
                if value.get("type") == "webSearch" and "sources" in value:
                    state.sources = sources(value["sources"])
            if state.want_events:
                yield from to_events(value)
    return ""


def _ended(exchange: Exchange) -> str:
    """The outcome of a body that ended before its last event.

    Unless this side aborted it, the body was lost: a proxy or the network can
    end a body too, so the server may still be generating and gets a stop.
    """
    return _CUT if exchange.aborted else _LOST


def _early_end(state: _State, exchange: Exchange, message: str) -> StreamError:
    return state.error(IncompleteStreamError, "the stream was aborted" if exchange.aborted else message)


def _drain(events: Iterator[Any], state: _State, jsonl: bool) -> None:
    """Read the rest of a stopped stream into ``state`` (the turn bounds it by its deadline)."""
    try:
        if jsonl:
            for line in events:
                kind, value = parse_update(line)
                if kind == STREAM:
                    state.add(Token(None, value))
                elif kind == FINAL:
                    return
            return
        for event in events:
            token, final = parse_event(event.data)
            state.add(token)
            if final is not None:
                return
    except (H2oError, _Truncated, UnicodeDecodeError):
        return  # the server cut the stream, as stop-generating does
