"""``AsyncClient``: the blocking :class:`Client` run from worker threads, for async code.

Nothing here speaks HTTP or parses events. A stream is the blocking
:class:`Stream`, iterated by one reader thread; tokens cross to the event loop
through a bounded buffer, a batch at a time, and the loop is only woken when
the consumer is actually waiting. Works under asyncio and trio (through anyio).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._client import Client
from ._conversation import Conversation
from ._events import Event
from ._exceptions import IncompleteStreamError
from ._http import Session
from ._protocol import DEFAULT_BASE_URL, Messages
from ._resource import AsyncResource
from ._stream import Stream
from ._types import ConversationInfo, Reply, Timeout, Token

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncClient", "AsyncConversation", "AsyncStream"]

# Worker threads per event loop that start reader threads (see AsyncStream._start).
_STARTERS = 4


class ClientOptions(TypedDict, total=False):
    """The keyword arguments :class:`Client` takes."""

    model: str | None
    proxy: str | None
    timeout: Timeout | float | tuple[float, float]
    max_retries: int
    session: Session | None
    headers: dict[str, str] | None
    verify: bool | str
    max_event_size: int
    max_connections: int
    prefetch: int
    protocol: str
    cookies: Mapping[str, str] | None


class AsyncClient(AsyncResource):
    """An async client for chat-ui servers of every era (the h2oGPT service first), for asyncio and trio.

    Example::

        async with h2o_sdk.AsyncClient() as client:
            async for text in client.stream("Hi"):
                print(text, end="", flush=True)

    Every call runs the blocking :class:`Client` in worker threads, so its
    behaviour (lifecycle, retries, errors) is exactly the blocking client's.
    At most ``max_concurrency`` streams run at once (per event loop); further
    ones wait for a slot. The client may be used from several tasks and
    across event loops (e.g. repeated ``asyncio.run``).

    Args:
        base_url: The service's root URL.
        max_concurrency: How many streams may hold a worker thread at once.
        buffer_size: How many tokens a stream reads ahead of a slow consumer.
        **options: Any :class:`Client` keyword argument; ``max_connections``
            defaults to ``max_concurrency``.

    Raises:
        TypeError, ValueError: An argument is unusable.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_concurrency: int = 64,
        buffer_size: int = 1024,
        **options: Unpack[ClientOptions],
    ) -> None:
        for name, value in (("max_concurrency", max_concurrency), ("buffer_size", buffer_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")
        options.setdefault("max_connections", max_concurrency)
        #: The blocking client doing the work; usable directly from threads.
        self.client = Client(base_url, **options)
        self.max_concurrency = max_concurrency
        self.buffer_size = buffer_size
        self._loops: weakref.WeakKeyDictionary[object, _Loop] = weakref.WeakKeyDictionary()

    @property
    def base_url(self) -> str:
        return self.client.base_url

    @property
    def model(self) -> str:
        return self.client.model

    def stream(
        self, messages: Messages, *, model: str | None = None, keep_tokens: bool | None = False, **parameters: Any
    ) -> AsyncStream:
        """Send a prompt in a new conversation and stream the reply.

        Takes the arguments of :meth:`Client.stream`.

        Returns:
            An :class:`AsyncStream`; nothing is sent until it is iterated.

        Raises:
            TypeError, ValueError: Bad messages or model, before any request.
        """
        return AsyncStream(self.client.stream(messages, model=model, keep_tokens=keep_tokens, **parameters), self)

    async def chat(
        self, messages: Messages, *, model: str | None = None, keep_tokens: bool | None = None, **parameters: Any
    ) -> Reply:
        """Send a prompt in a new conversation and wait for the whole reply.

        Takes the arguments of :meth:`Client.chat` and returns its :class:`Reply`.

        Raises:
            H2oError: As :class:`Stream` documents.
        """
        return await _finish(self.stream(messages, model=model, keep_tokens=keep_tokens, **parameters))

    def conversation(
        self, *, id: str | None = None, model: str | None = None, keep: bool = False,
        system_prompt: str | None = None, **parameters: Any,
    ) -> AsyncConversation:
        """Start a multi-turn conversation, or open one the server has: the twin of :meth:`Client.conversation`.

        An existing one (``id=``) is read back when it is entered (``async with``)
        or awaited (``conversation = await client.conversation(id=...)``).
        """
        if id is None:
            return AsyncConversation(self.client.conversation(model=model, keep=keep, system_prompt=system_prompt,
                                                              **parameters), self)
        if not isinstance(id, str) or not id.strip():
            raise ValueError(f"id must be a conversation id, not {id!r}")
        if system_prompt is not None:
            raise ValueError("an existing conversation keeps its own system prompt: pass id or system_prompt")
        return AsyncConversation(self.client.conversation(model=model, keep=True, **parameters), self, opening=id)

    async def conversations(self, limit: int | None = None) -> list[ConversationInfo]:
        """The session's conversations on the server (see :meth:`Client.conversations`)."""
        return await anyio.to_thread.run_sync(self.client.conversations, limit)

    async def delete_conversations(self) -> int:
        """Delete every conversation of the session (see :meth:`Client.delete_conversations`)."""
        return await anyio.to_thread.run_sync(self.client.delete_conversations)

    async def aclose(self) -> None:
        """Clean up what the client started and close its connections (idempotent).

        As :meth:`Client.close`, in a worker thread; shielded from cancellation.
        """
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.client.close)


    async def connect(self) -> None:
        """Open the connection, accept the welcome modal and prefetch now (see :meth:`Client.connect`)."""
        await anyio.to_thread.run_sync(self.client.connect)

    @property
    def protocol(self) -> str | None:
        """The protocol family in use, ``None`` until known (see :attr:`Client.protocol`)."""
        return self.client.protocol

    async def detect_protocol(self) -> str:
        """Find out which family the server speaks (see :meth:`Client.detect_protocol`)."""
        return await anyio.to_thread.run_sync(self.client.detect_protocol)

    async def models(self) -> list[str]:
        """The ids of the models the server serves (see :meth:`Client.models`)."""
        return await anyio.to_thread.run_sync(self.client.models)

    async def wait_cleanup(self, timeout: float | None = None) -> bool:
        """Wait until the cleanup running in the background has been sent (see :meth:`Client.wait_cleanup`)."""
        return await anyio.to_thread.run_sync(self.client.wait_cleanup, timeout)

    def __repr__(self) -> str:
        return f"<AsyncClient {self.base_url} model={self.model!r}>"

    def _loop(self) -> _Loop:
        # anyio primitives belong to one event loop: keep their state per loop.
        token = anyio.lowlevel.current_token()
        loop = self._loops.get(token.native_token)
        if loop is None:
            loop = self._loops[token.native_token] = _Loop(token, self.max_concurrency)
        return loop


class AsyncConversation(AsyncResource):
    """A multi-turn conversation for async code: the twin of :class:`Conversation`.

    Example::

        async with client.conversation() as conversation:
            print(await conversation.chat("Name three rivers."))
            async for text in conversation.stream("Which is the longest?"):
                print(text, end="")
    """

    def __init__(self, conversation: Conversation, client: AsyncClient, *, opening: str | None = None) -> None:
        self._conversation = conversation
        self._client = client
        self._opening = opening  # an existing conversation, read back when entered or awaited

    async def _open(self) -> AsyncConversation:
        opening, self._opening = self._opening, None
        if opening is not None:
            await anyio.to_thread.run_sync(self._conversation._open_existing, opening)
        return self

    def __await__(self) -> Generator[Any, None, AsyncConversation]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncConversation:
        return await self._open()

    def _opened(self) -> Conversation:
        if self._opening is not None:
            raise ValueError("open the conversation first: async with client.conversation(id=...), or await it")
        return self._conversation

    @property
    def id(self) -> str | None:
        """The server conversation's id; ``None`` until the first turn."""
        return self._conversation.id or self._opening

    @property
    def title(self) -> str | None:
        """The conversation's title (see :attr:`Conversation.title`)."""
        return self._opened().title

    @property
    def system_prompt(self) -> str | None:
        """The conversation's system prompt (see :attr:`Conversation.system_prompt`)."""
        return self._opened().system_prompt

    @property
    def model(self) -> str:
        """The model of the conversation (see :attr:`Conversation.model`; switch it with :meth:`set_model`)."""
        return self._conversation.model

    async def set_model(self, model: str) -> None:
        """Switch the conversation's model (the twin of setting :attr:`Conversation.model`)."""
        conversation = self._opened()

        def switch() -> None:
            conversation.model = model

        await anyio.to_thread.run_sync(switch)

    async def rename(self, title: str) -> None:
        """Give the server conversation a new title (see :meth:`Conversation.rename`)."""
        await anyio.to_thread.run_sync(self._opened().rename, title)

    async def delete(self) -> None:
        """Delete the server conversation now (see :meth:`Conversation.delete`)."""
        self._opening = None
        await anyio.to_thread.run_sync(self._conversation.delete)

    @property
    def history(self) -> list[dict[str, str]]:
        """The turns so far as ``{"role", "content"}`` dicts (a copy)."""
        return self._opened().history

    def stream(self, text: str, *, keep_tokens: bool | None = False, **parameters: Any) -> AsyncStream:
        """Send the next user message and stream the reply."""
        return AsyncStream(self._opened().stream(text, keep_tokens=keep_tokens, **parameters), self._client)

    async def chat(self, text: str, *, keep_tokens: bool | None = None, **parameters: Any) -> Reply:
        """Send the next user message and wait for the whole reply."""
        await self._open()
        return await _finish(self.stream(text, keep_tokens=keep_tokens, **parameters))

    def retry_stream(self, *, keep_tokens: bool | None = False, **parameters: Any) -> AsyncStream:
        """Regenerate the last reply, streaming it."""
        return AsyncStream(self._opened().retry_stream(keep_tokens=keep_tokens, **parameters), self._client)

    async def retry(self, *, keep_tokens: bool | None = None, **parameters: Any) -> Reply:
        """Regenerate the last reply and wait for it."""
        await self._open()
        return await _finish(self.retry_stream(keep_tokens=keep_tokens, **parameters))

    def continue_stream(self, *, keep_tokens: bool | None = False) -> AsyncStream:
        """Extend the last reply, streaming the new text (see :meth:`Conversation.continue_stream`)."""
        return AsyncStream(self._opened().continue_stream(keep_tokens=keep_tokens), self._client)

    async def continue_(self, *, keep_tokens: bool | None = None) -> Reply:
        """Extend the last reply and wait for the new text."""
        await self._open()
        return await _finish(self.continue_stream(keep_tokens=keep_tokens))

    def edit_stream(self, index: int, text: str, *, keep_tokens: bool | None = False) -> AsyncStream:
        """Replace the user message ``history[index]``, streaming a new reply (see :meth:`Conversation.edit_stream`)."""
        return AsyncStream(self._opened().edit_stream(index, text, keep_tokens=keep_tokens), self._client)

    async def edit(self, index: int, text: str, *, keep_tokens: bool | None = None) -> Reply:
        """Replace the user message ``history[index]`` and wait for the new reply."""
        await self._open()
        return await _finish(self.edit_stream(index, text, keep_tokens=keep_tokens))

    async def branches(self, index: int) -> list[dict[str, Any]]:
        """The versions of ``history[index]`` the server keeps (see :meth:`Conversation.branches`)."""
        return await anyio.to_thread.run_sync(self._opened().branches, index)

    async def switch(self, index: int, n: int) -> None:
        """Make version ``n`` of ``history[index]`` the current branch (see :meth:`Conversation.switch`)."""
        await anyio.to_thread.run_sync(self._opened().switch, index, n)

    async def aclose(self) -> None:
        """Delete the server conversation unless ``keep=True`` (idempotent).

        Shielded: a cancelled scope around ``async with`` still deletes it (11.1).
        """
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._conversation.close)


    def __repr__(self) -> str:
        return f"<AsyncConversation id={self.id!r}>"


async def _finish(stream: AsyncStream) -> Reply:
    async with stream:
        async for _ in stream.tokens():
            pass
    if stream.reply is None:  # unreachable: a stream only ends quietly with its reply
        raise IncompleteStreamError("the stream ended without a reply", text=stream.text)
    return stream.reply


class _Loop:
    """What the streams of one client share in one event loop.

    ``limiter`` bounds the reader threads; ``starters`` bounds the anyio worker
    threads that start them. ``call_soon`` sets events from reader threads
    with one event-loop callback for everything that became ready since the
    loop last ran it, instead of one per token per stream.
    """

    def __init__(self, token: anyio.lowlevel.EventLoopToken, max_concurrency: int) -> None:
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.starters = anyio.CapacityLimiter(_STARTERS)
        self._backend = token.backend_class
        # Weak: the client keeps this per loop in a WeakKeyDictionary keyed by the loop.
        self._native = weakref.ref(token.native_token)
        self._lock = threading.Lock()
        self._ready: list[Callable[[], object]] = []

    def event(self) -> anyio.Event:
        """A new event of this loop's backend (``anyio.Event()`` looks the backend up each time)."""
        return self._backend.create_event()

    def call_soon(self, func: Callable[[], object]) -> None:
        """Run ``func`` in the event loop thread soon (from any thread)."""
        with self._lock:
            self._ready.append(func)
            if len(self._ready) > 1:
                return  # a callback is already on its way and will run it
        native = self._native()
        if native is None:
            return  # the loop is gone: nobody waits
        with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
            self._backend.run_sync_soon(self._run_ready, (), native)

    def _run_ready(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for func in ready:
            func()


class AsyncStream(AsyncResource):
    """A reply streamed to async code: ``async for text in stream``.

    The async twin of :class:`Stream`: iterating yields the text of each
    non-special token; :meth:`tokens` yields :class:`Token` objects; once
    finished, :attr:`reply` holds the :class:`Reply`. Use it as an async
    context manager or call :meth:`aclose`.

    Cancelling the consuming task, ``aclose()`` and leaving ``async with``
    stop the stream promptly at every step, even while the server is silent:
    the reader thread is woken by shutting its connection down (in the
    settings and prompt requests, while waiting for the reply, in backoff
    sleeps), then stop-generating and delete run as in the blocking client,
    and ``aclose()`` returns once the thread has finished. The one exception
    is a conversation being created, which is never cut (the server may have
    made it already): ``aclose()`` returns at once and the thread deletes the
    conversation when the create returns.
    """

    def __init__(self, stream: Stream, client: AsyncClient) -> None:
        self._stream = stream
        self._client = client
        self._feed: _Feed | None = None
        self._batch: deque[Any] = deque()
        self._closed = False

    @property
    def reply(self) -> Reply | None:
        """The :class:`Reply` once the last event has arrived; ``None`` before."""
        return self._stream.reply

    @property
    def text(self) -> str:
        """The reply's text received so far."""
        return self._stream.text

    @property
    def conversation_id(self) -> str | None:
        """The server conversation's id, once created."""
        return self._stream.conversation_id

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> str:
        while True:
            token = await self._next_token()
            if token.__class__ is Token and not token.special:
                return token.text

    def tokens(self) -> AsyncIterator[Token]:
        """Iterate the rest of this stream as :class:`Token` objects."""
        return _Tokens(self, events=False)

    def events(self) -> AsyncIterator[Event]:
        """Iterate the rest of this stream as every update the server sends, typed (as :meth:`Stream.events`)."""
        self._stream.events()  # the reader thread's items now include the events
        return _Tokens(self, events=True)

    async def aclose(self) -> None:
        """Stop the stream and wait until the server conversation is cleaned up (idempotent)."""
        if self._closed:
            return
        self._closed = True
        feed = self._feed
        if feed is None:
            self._stream.close()  # never started: nothing was sent
            return
        with anyio.CancelScope(shield=True):
            await self._shut(feed)


    def __del__(self) -> None:
        # Abandoned without aclose(): the reader thread cleans up on its own.
        feed = self._feed
        if feed is not None and not feed.done:
            self._stream.abort()
            feed.abort()

    def __repr__(self) -> str:
        return f"<AsyncStream conversation={self.conversation_id!r}>"

    async def _next_token(self) -> Any:
        if self._batch:
            return self._batch.popleft()
        if self._closed:
            raise StopAsyncIteration
        feed = self._feed or await self._start()
        while True:
            taken = feed.take()
            if isinstance(taken, list):
                self._batch.extend(taken)
                return self._batch.popleft()
            if taken is None:  # the reader thread has finished
                self._closed = True
                feed.join()
                if feed.error is not None:
                    raise feed.error
                raise StopAsyncIteration
            try:
                await taken.wait()
            except BaseException:
                # Cancelled (or interrupted) while the server may be silent.
                self._closed = True
                with anyio.CancelScope(shield=True):
                    await self._shut(feed)
                raise

    async def _start(self) -> _Feed:
        loop = self._client._loop()
        feed = _Feed(self._stream, self._client.buffer_size, loop)
        await loop.limiter.acquire_on_behalf_of(feed)
        self._feed = feed
        # Thread.start() returns once the new thread runs, and with hundreds of
        # streams taking the GIL that takes milliseconds: started in the loop, a
        # burst of 1,000 streams froze it for seconds. A worker waits instead; the
        # shield makes sure the thread exists (and so can be shut) before a
        # cancellation lands.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(feed.start, limiter=loop.starters)
        return feed

    async def _shut(self, feed: _Feed) -> None:
        ends_promptly = self._stream._abort()
        feed.abort()
        if not ends_promptly:
            # The thread is finishing a create that must not be cut (the server
            # may have made the conversation); it deletes it and ends by itself,
            # and Client.close() waits for it.
            return
        while (waiter := feed.wait_done()) is not None:
            await waiter.wait()
        feed.join()


class _Tokens:
    """``AsyncStream.tokens()`` and ``events()``: the same stream, as :class:`Token` objects or every event."""

    def __init__(self, stream: AsyncStream, *, events: bool) -> None:
        self._stream = stream
        self._events = events

    def __aiter__(self) -> _Tokens:
        return self

    async def __anext__(self) -> Any:
        while True:
            item = await self._stream._next_token()
            if self._events or item.__class__ is Token:
                return item


class _Feed:
    """One reader thread iterating a blocking stream into a bounded buffer.

    The thread blocks when ``capacity`` tokens are waiting (backpressure). The
    consumer takes the whole buffer at once, so the lock is taken once per
    batch, and the event loop is woken only when the consumer is waiting.
    """

    def __init__(self, stream: Stream, capacity: int, loop: _Loop) -> None:
        self._stream = stream
        self._capacity = capacity
        self._loop = loop
        self._cond = threading.Condition()
        self._buffer: list[Any] = []  # tokens, and events once asked for
        self._waiter: anyio.Event | None = None
        self._aborted = False
        self.done = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="h2o-sdk-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait for the finished thread to exit (it has nothing left but returning)."""
        self._thread.join()

    # -- the event loop's side --------------------------------------------------

    def take(self) -> list[Any] | anyio.Event | None:
        """A batch of tokens, an event to wait on, or ``None`` once finished."""
        with self._cond:
            if self._buffer:
                batch, self._buffer = self._buffer, []
                self._cond.notify()
                return batch
            if self.done:
                return None
            self._waiter = waiter = self._loop.event()
            return waiter

    def wait_done(self) -> anyio.Event | None:
        """An event to wait on until the thread has finished, or ``None`` if it has."""
        with self._cond:
            if self.done:
                return None
            self._waiter = waiter = self._loop.event()
            return waiter

    def abort(self) -> None:
        """Release a thread blocked on a full buffer (any thread; idempotent)."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    # -- the reader thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._aborted:
                return  # shut before the thread ran: send nothing (finally closes the stream)
            for token in self._stream._items():
                with self._cond:
                    while len(self._buffer) >= self._capacity and not self._aborted:
                        self._cond.wait()
                    if self._aborted:
                        break
                    self._buffer.append(token)
                    waiter, self._waiter = self._waiter, None
                if waiter is not None:
                    self._loop.call_soon(waiter.set)
        except BaseException as exc:  # handed to the consumer
            self.error = exc
        finally:
            self._stream.close()  # after an abort: stop-generating and delete, here
            with self._cond:
                self.done = True
                waiter, self._waiter = self._waiter, None
            self._loop.call_soon(lambda: self._finished(waiter))

    def _finished(self, waiter: anyio.Event | None) -> None:
        self._loop.limiter.release_on_behalf_of(self)
        if waiter is not None:
            waiter.set()
