"""Bytes from the socket -> lines -> sseclient-py -> tokens: the stream object.

This module never opens a connection. The client hands a :class:`Stream` a
function that performs the request and returns an :class:`Exchange`: the
body's byte chunks, as they arrive, and a ``finish`` step that cleans up on
the server. Only this module sees ``sseclient`` events.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Protocol

from sseclient import SSEClient

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
from ._resource import Resource
from ._types import Reply, Token

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "Exchange", "LineReader", "Stream"]

#: The largest event (bytes between two blank lines) a stream accepts.
DEFAULT_MAX_EVENT_SIZE = 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_COMPACT_EVERY = 512
_BLANK = (b"\n", b"\r", b"\r\n")


class _Truncated(Exception):
    """The body ended in the middle of an event."""


class LineReader:
    """The lines of an event-stream body, line endings kept, as bytes.

    Built for sseclient-py, which finds event boundaries by looking at line
    endings, so they must survive (``requests``' ``iter_lines`` strips them).
    A line is yielded as soon as its terminator arrives; a partial line waits
    for the rest, which costs nothing because no event is complete before its
    blank line anyway.

    One wart, on purpose: a line ending in ``\\r`` is yielded at once, because
    a bare CR is a complete line ending (HTML living standard, 9.2.5) and
    waiting for a possible ``\\n`` would stall CR-only streams. If the next read
    then starts with ``\\n``, that ``\\n`` is yielded alone as the tail of a
    CRLF; sseclient-py concatenates before it tests for the blank line, so the
    event comes out right.

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
                    raise ProtocolError(f"a stream event is larger than {limit} bytes")
            for line in lines:
                if after_cr and line == b"\n":
                    # The tail of a CRLF whose CR ended the previous read.
                    after_cr = False
                    yield line
                    continue
                after_cr = line[-1:] == b"\r"
                if line in _BLANK:
                    event_size = 0
                else:
                    event_size += len(line)
                    if event_size > limit:
                        raise ProtocolError(f"a stream event is larger than {limit} bytes")
                yield line
        if pending or event_size or head:
            raise _Truncated()


class Exchange(Protocol):
    """One prompt's exchange with the server, as the client opened it."""

    @property
    def conversation_id(self) -> str:
        """The server conversation the reply belongs to."""
        ...

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they arrive.

        Raises:
            APITimeoutError: No byte arrived within the idle timeout.
            APIConnectionError: The connection broke.
        """
        ...

    def abort(self) -> None:
        """Wake a read blocked in another thread (thread-safe; never raises)."""
        ...

    def stop_generating(self) -> None:
        """Ask the server to stop, and bound further reads by the cleanup timeout; never raises."""
        ...

    def finish(self, *, completed: bool, stop: bool) -> None:
        """Release the answer and clean up on the server; never raises.

        Args:
            completed: The last event arrived (the rest of the body may be drained).
            stop: The reply was cut short: ask the server to stop generating.
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
    ``keep_tokens=True`` (``chat()`` always does); otherwise it is empty, since
    the caller had each token as it arrived, and a long stream does not hold
    them twice.

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
        open_exchange: Callable[[], Exchange],
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        keep_tokens: bool = False,
        keep_partial: bool = False,
        on_end: Callable[[str | None, str], None] | None = None,
    ) -> None:
        # The generator holds the state, never the Stream: without a reference
        # cycle, a stream abandoned after ``break`` is finished (and its
        # conversation deleted) as soon as the loop lets go of it.
        self._state = _State(keep_tokens)
        self._generator = _run(self._state, open_exchange, max_event_size, keep_partial, on_end)

    @property
    def reply(self) -> Reply | None:
        """The :class:`Reply` once the last event has arrived; ``None`` before."""
        return self._state.reply

    @property
    def conversation_id(self) -> str | None:
        """The server conversation's id, once it has been created."""
        return self._state.conversation_id

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
            if not token.special:
                return token.text

    def tokens(self) -> Iterator[Token]:
        """Iterate the rest of this stream as :class:`Token` objects."""
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
        """
        state = self._state
        state.aborted = True
        exchange = state.exchange
        if exchange is not None:
            exchange.abort()


    def __repr__(self) -> str:
        state = "finished" if self.reply is not None else f"{self._state.count} tokens"
        return f"<Stream conversation={self.conversation_id!r} {state}>"



class _State:
    """What a stream has received; shared by the Stream and its generator."""

    __slots__ = ("aborted", "conversation_id", "count", "exchange", "parts", "reply", "tokens")

    def __init__(self, keep_tokens: bool) -> None:
        self.parts: list[str] = []
        self.tokens: list[Token] | None = [] if keep_tokens else None
        self.count = 0
        self.reply: Reply | None = None
        self.conversation_id: str | None = None
        self.exchange: Exchange | None = None
        self.aborted = False

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
    open_exchange: Callable[[], Exchange],
    max_event_size: int,
    keep_partial: bool,
    on_end: Callable[[str | None, str], None] | None,
) -> Generator[Token, None, None]:
    exchange = open_exchange()
    state.conversation_id = exchange.conversation_id
    state.exchange = exchange
    completed = False
    stop = True  # ask the server to stop generating, unless it ended the generation itself
    server_ended = False  # the server ended the stream: it stores nothing (protocol.md 2.5)
    events: Iterator[Any] | None = None
    try:
        if state.aborted:  # abort() came while the request was being sent
            raise state.error(IncompleteStreamError, "the stream was aborted")
        events = SSEClient(iter(LineReader(exchange.chunks(), max_event_size))).events()
        for event in events:
            try:
                token, final = parse_event(event.data)
            except GenerationError:
                stop = False
                server_ended = True
                raise
            state.add(token)
            if final is not None:
                state.reply = Reply(
                    **reply_fields(final),
                    tokens=tuple(state.tokens) if state.tokens is not None else (),
                    conversation_id=state.conversation_id,
                )
                completed = True
                yield token
                return
            yield token
        server_ended = not state.aborted
        raise state.error(
            IncompleteStreamError,
            "the stream was aborted" if state.aborted else "the stream ended before its last event",
        )
    except _Truncated:
        server_ended = not state.aborted
        raise state.error(IncompleteStreamError, "the stream ended in the middle of an event") from None
    except StreamError as exc:
        state.annotate(exc)  # parse errors and the size bound know nothing of the text so far
        raise
    except APITimeoutError:
        raise
    except APIConnectionError as exc:
        server_ended = not state.aborted
        what = "the stream was aborted" if state.aborted else f"the stream was cut: {exc}"
        raise state.error(IncompleteStreamError, what) from exc
    finally:
        state.exchange = None
        # A cut connection cannot be told from a broken network, so it still gets
        # a stop; but only a stream this side cut short leaves a partial reply
        # stored on the server.
        stop = stop and not completed
        partial = not completed and not server_ended
        try:
            if partial and keep_partial and events is not None:
                # The server stores what it generated until the stop reached it:
                # read that rest, so the caller's text is what the server kept.
                stop = False
                exchange.stop_generating()
                _drain(events, state)
        finally:  # even if a second Ctrl-C lands here
            exchange.finish(completed=completed, stop=stop)
            if on_end is not None:
                text = state.reply.text if state.reply is not None else state.text()
                on_end("reply" if completed else "partial" if partial else None, text)


def _drain(events: Iterator[Any], state: _State) -> None:
    """Read the rest of a stopped stream into ``state`` (bounded by the exchange's timeouts)."""
    try:
        for event in events:
            token, final = parse_event(event.data)
            state.add(token)
            if final is not None:
                return
    except (H2oError, _Truncated):
        return  # the server cut the stream, as stop-generating does
