"""One owner of a turn's life: detect, accept, create, send, stop, drain, read back, delete.

A *turn* is one prompt and its reply. Its life is a small state machine
(:data:`TRANSITIONS`): the stream reports what happened (:class:`Event`), and
the phase it lands in decides the cleanup (:data:`CLEANUP`): whether to ask
the server to stop generating, whether to read what the server still sends
(so a conversation's history is what the server stored), and what the server
stored. The stream, the conversation and the async layer ask a :class:`Turn`;
none of them keeps flags of its own.

Cancellation reaches every blocking step through an :class:`~._http.Abort`
handle: the client's connections register their socket with the handle of the
turn running in their thread, and ``Abort.abort`` shuts that socket down (which
wakes a blocked ``recv`` in another thread) and interrupts backoff sleeps.
While a conversation is being created the socket is never cut: the server may
have created it already, and only its answer tells the id to delete; the turn
finishes that request in the background and deletes what it created. For the
same reason Ctrl-C is held while the create runs in the main thread, and
raised once the turn knows the id to delete.

What the caller need not wait for (a one-shot turn's stop-generating and
delete, a conversation's delete) is handed to the client's :class:`Cleaner`, a
thread of its own: a reply ends for the caller when its last event arrives,
not a round trip later. ``Client.close()`` and interpreter exit wait for it.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import logging
import signal
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import _protocol
from ._exceptions import APIConnectionError, APIStatusError, H2oError, IncompleteStreamError, StreamError
from ._http import Abort
from ._protocol import Family, Prompt
from ._session import FamilyChanged
from ._types import Timeout

__all__ = [
    "CLEANUP", "TRANSITIONS", "Abort", "Cleaner", "Cleanup", "Event", "Owner", "Phase", "Step", "Transport", "Turn",
    "wait_idle",
]

logger = logging.getLogger("h2o_sdk")


class Phase(enum.Enum):
    """Where a turn is."""

    NEW = "new"  # nothing sent yet
    CREATING = "creating"  # accepting the welcome modal, creating the conversation
    SENDING = "sending"  # the prompt is being written, or waits for its status line
    STREAMING = "streaming"  # the reply is arriving
    COMPLETED = "completed"  # the last event arrived: the server stored the reply
    FAILED = "failed"  # the server refused or ended the turn: it generates and stores nothing more
    ABANDONED = "abandoned"  # cut short before the prompt was sent: the server has no turn
    UNANSWERED = "unanswered"  # the prompt may have reached the server, no answer came
    CUT = "cut"  # cut short on this side mid-reply: the server stores what it made until it stops
    BROKEN = "broken"  # the connection broke mid-reply: the server may still be generating
    CLOSED = "closed"  # cleaned up


class Event(enum.Enum):
    """What happened to a turn."""

    CREATE = "create"  # a new conversation is needed
    SEND = "send"  # the prompt goes out
    HEADERS = "headers"  # the prompt's answer started (2xx)
    FINAL = "final"  # the last event arrived
    REFUSED = "refused"  # an error status, an in-band error, a request that never left
    LOST = "lost"  # the connection failed, or the body ended early, after the request may have arrived
    CUT = "cut"  # this side gave up: break, close(), abort(), an exception, a timeout
    CLEANED = "cleaned"  # the cleanup ran


_ENDED = (Phase.COMPLETED, Phase.FAILED, Phase.ABANDONED, Phase.UNANSWERED, Phase.CUT, Phase.BROKEN)

#: Every legal transition; anything else is a bug in the caller.
TRANSITIONS: Mapping[tuple[Phase, Event], Phase] = {
    (Phase.NEW, Event.CREATE): Phase.CREATING,
    (Phase.NEW, Event.SEND): Phase.SENDING,
    (Phase.NEW, Event.CUT): Phase.ABANDONED,
    (Phase.CREATING, Event.SEND): Phase.SENDING,
    (Phase.CREATING, Event.REFUSED): Phase.FAILED,
    # A create whose answer was lost: no id to act on, and it is never retried (issue 11.6).
    (Phase.CREATING, Event.LOST): Phase.FAILED,
    (Phase.CREATING, Event.CUT): Phase.ABANDONED,
    (Phase.SENDING, Event.HEADERS): Phase.STREAMING,
    (Phase.SENDING, Event.REFUSED): Phase.FAILED,
    (Phase.SENDING, Event.LOST): Phase.UNANSWERED,
    (Phase.SENDING, Event.CUT): Phase.UNANSWERED,
    (Phase.STREAMING, Event.FINAL): Phase.COMPLETED,
    (Phase.STREAMING, Event.REFUSED): Phase.FAILED,
    (Phase.STREAMING, Event.LOST): Phase.BROKEN,
    (Phase.STREAMING, Event.CUT): Phase.CUT,
    **{(phase, Event.CLEANED): Phase.CLOSED for phase in _ENDED},
}


@dataclass(frozen=True)
class Cleanup:
    """What an ended turn needs.

    Attributes:
        stop: Ask the server to stop generating (it may still be at it).
        drain: Read what the server sends until it stops (only a conversation
            wants this, so its history is what the server stored).
        stored: What the server kept of the turn: ``"reply"``, ``"partial"``
            (the text read until the server stopped), or ``None`` (nothing).
    """

    stop: bool
    drain: bool
    stored: str | None


#: The cleanup of each ended phase.
CLEANUP: Mapping[Phase, Cleanup] = {
    Phase.COMPLETED: Cleanup(stop=False, drain=False, stored="reply"),
    Phase.FAILED: Cleanup(stop=False, drain=False, stored=None),
    Phase.ABANDONED: Cleanup(stop=False, drain=False, stored=None),
    Phase.UNANSWERED: Cleanup(stop=True, drain=False, stored=None),
    Phase.CUT: Cleanup(stop=True, drain=True, stored="partial"),
    Phase.BROKEN: Cleanup(stop=True, drain=False, stored=None),
}


class Body(Protocol):
    """The prompt's open answer, as the client's transport hands it out."""

    @property
    def sock(self) -> socket.socket | None: ...

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (raises ``APIConnectionError``/``APITimeoutError``)."""
        ...

    def set_deadline(self, deadline: float) -> None:
        """From now on no read may wait past ``deadline`` (``time.monotonic()``)."""
        ...

    def close(self, *, reuse: bool) -> None:
        """Release the answer (``reuse``: the body was read to its end); never raises."""
        ...


class Transport(Protocol):
    """What a turn needs from the client: the requests, and its settings."""

    timeout: Timeout

    @property
    def model(self) -> str:
        """The client's model (detection may have chosen the server's own)."""
        ...

    def check_open(self) -> None:
        """Raise ``ValueError`` if the client is closed."""
        ...

    def family(self, abort: Abort) -> Family:
        """The server's wire family (detected on first need)."""
        ...

    def accept_settings(self, abort: Abort) -> None:
        """Accept the welcome modal, once per session."""
        ...

    def create_conversation(self, model: str, abort: Abort, preprompt: str | None = None) -> str:
        """Create a conversation and return its id."""
        ...

    def leaf(self, conversation_id: str, abort: Abort) -> str:
        """The id of the message a new one goes under (tree families)."""
        ...

    def take_spare(self, model: str) -> str | None:
        """A conversation of ``model`` created ahead (``prefetch``), if one is ready."""
        ...

    def refill(self, after: threading.Event) -> None:
        """Create conversations ahead in the background, up to ``prefetch``, once ``after`` is set."""
        ...

    def open_prompt(self, conversation_id: str, prompt: Prompt, abort: Abort) -> Body:
        """POST the prompt in the family's shape; return its streaming answer once the status line said 2xx."""
        ...

    def read_back(self, conversation_id: str, deadline: float) -> list[dict[str, str]] | None:
        """The current branch the server stored, root first; ``None`` if it cannot be read (logged)."""
        ...

    def cleanup_request(self, method: str, path: str, deadline: float, json_body: Any = None) -> None:
        """One cleanup request, bounded by ``deadline``; raises ``H2oError`` on failure."""
        ...

    def reattach(self, conversation_id: str, generation_id: str, seen: int, abort: Abort) -> Body | None:
        """Follow a generation again after its connection dropped (chat-ui HEAD's ``/stream``).

        Returns ``None`` where the server cannot (no sign of HEAD); raises ``H2oError`` on failure.
        """
        ...

    def defer(self, conversation_id: str, steps: Sequence[Step]) -> None:
        """Run cleanup ``steps`` off the caller's path (the client's :class:`Cleaner`)."""
        ...

    def track(self, turn: Turn) -> None:
        """A turn started (the client aborts and awaits it on close)."""
        ...

    def untrack(self, turn: Turn) -> None: ...


class Owner(Protocol):
    """The conversation a turn belongs to (a one-shot turn has none).

    Its methods are private names: they are for the turn, not the caller.
    """

    def _server_id(self) -> str | None:
        """The server conversation, once created."""
        ...

    def _turn_created(self, conversation_id: str) -> bool:
        """The turn created the conversation; ``False`` if the owner was closed meanwhile."""
        ...

    def _turn_begins(self) -> None:
        """A turn starts (``ValueError`` if another one runs, or the owner is closed)."""
        ...

    def _turn_ends(self) -> None:
        """The turn has been cleaned up."""
        ...


class Turn:
    """One prompt's life on the server, driven by the stream that reads it.

    A one-shot turn (``owner=None``) creates its own conversation and deletes
    it when it ends; a conversation's turn uses (or creates) the owner's.

    Args:
        transport: The client.
        model: The model of a conversation to create (``None``: the client's,
            read when the conversation is created).
        build: Makes the prompt, and the preprompt of a conversation to
            create, for the server's family (it raises ``UnsupportedError``
            for what the family cannot send: nothing has been created then).
        owner: The conversation, or ``None`` for a one-shot turn.
        keep_partial: Read what the server sends after a stop, so the text is
            what the server stored (conversations).

    Attributes:
        branch: For a conversation's turn, what the server stored afterwards
            (the current branch, root first), when the family reads it back.
        final_prefix: Text the server's ``finalAnswer`` puts before the new
            text, which the reply leaves out (0.8's answer to a continue is the
            whole message); ``build`` sets it.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        model: str | None,
        build: Callable[[Family], tuple[Prompt, str | None]],
        owner: Owner | None = None,
        keep_partial: bool = False,
    ) -> None:
        self._transport = transport
        self._model = model
        self._build = build
        self._family: Family | None = None
        self.stream_format = "sse"
        self.branch: list[dict[str, str]] | None = None
        # What the server's finalAnswer repeats before the new text (a continue in 0.8); set by build.
        self.final_prefix = ""
        # The reply's text as the caller has seen it, for HEAD's stop point (set by the stream).
        self.seen_text = ""
        self._generation_id: str | None = None
        self._reattached = 0
        self._owner = owner
        self._keep_partial = keep_partial
        self._abort = Abort()
        self._body: Body | None = None
        self.phase = Phase.NEW
        self.conversation_id: str | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None  # the thread driving the turn

    def fire(self, event: Event) -> Phase:
        """Move to the phase ``event`` leads to.

        Raises:
            RuntimeError: ``event`` cannot happen in this phase (a bug).
        """
        try:
            self.phase = TRANSITIONS[self.phase, event]
        except KeyError:
            raise RuntimeError(f"a turn in phase {self.phase.value} cannot take {event.value}") from None
        return self.phase

    @property
    def aborted(self) -> bool:
        return self._abort.aborted

    def abort(self) -> bool:
        """Cut the turn short from any thread; ``False`` while it finishes a create in the background."""
        return self._abort.abort()

    def open(self) -> Body:
        """Create the conversation if needed and send the prompt.

        On failure the turn is cleaned up before the error propagates.

        Raises:
            ValueError: The client or the conversation is closed.
            IncompleteStreamError: The turn was aborted.
            H2oError: The server refused, or the network failed.
        """
        transport = self._transport
        transport.check_open()
        if self.aborted:
            self.fire(Event.CUT)
            self.fire(Event.CLEANED)
            raise IncompleteStreamError("the stream was aborted")
        if self._owner is not None:
            self._owner._turn_begins()
        self.thread = threading.current_thread()
        transport.track(self)
        try:
            return self._open()
        except BaseException:
            if (self.phase, Event.CUT) in TRANSITIONS:  # still under way: this side gives up
                self.fire(Event.CUT)
            if self.phase is not Phase.CLOSED:
                self.finish(None, None)
            raise

    def _open(self) -> Body:
        try:
            return self._open_as_family()
        except FamilyChanged:
            # The family remembered for the URL was wrong and the server speaks another: nothing
            # was created, so the turn starts over, once, as the family now detected.
            self.phase = Phase.NEW
            return self._open_as_family()

    def _open_as_family(self) -> Body:
        transport, abort = self._transport, self._abort
        owner = self._owner
        family = self._family = transport.family(abort)
        self.stream_format = family.stream
        prompt, preprompt = self._build(family)  # what the family cannot send fails here, before any create
        if family.generation_id:
            prompt = replace(prompt, generation_id=str(uuid.uuid4()))
            self._generation_id = prompt.generation_id
        self.conversation_id = owner._server_id() if owner is not None else None
        model = self._model or transport.model  # detection may have found the server's own default
        if self.conversation_id is None and preprompt is None and (spare := transport.take_spare(model)):
            self._adopt(spare)  # created ahead: the prompt goes out at once
        if self.conversation_id is None:
            self.fire(Event.CREATE)
            with _interrupts_held():  # Ctrl-C is raised once the id to delete is known
                with self._failing():
                    transport.accept_settings(abort)
                    with abort.uncuttable():
                        conversation_id = transport.create_conversation(model, abort, preprompt)
                self._adopt(conversation_id)
            if self.aborted:
                self.fire(Event.CUT)
                raise self._aborted_error()
        assert self.conversation_id is not None
        if family.tree and prompt.parent_id is None:
            # The server names the root only in the stored conversation (protocol-eras.md 4).
            try:
                prompt = replace(prompt, parent_id=transport.leaf(self.conversation_id, abort))
            except Exception as exc:
                if self.aborted:  # abort() or close() while it was read: the abort, not a broken connection
                    raise self._aborted_error() from exc
                raise
        self.fire(Event.SEND)
        # Conversations created ahead are made while this reply streams: once the prompt
        # has taken its pooled connection (the refill would take it otherwise), or at
        # the latest once its answer has begun.
        abort.attached.clear()
        transport.refill(abort.attached)
        try:
            with self._failing():
                body = transport.open_prompt(self.conversation_id, prompt, abort)
        finally:
            abort.attached.set()
        self._body = body
        self.fire(Event.HEADERS)
        if self.aborted:  # abort() came while the answer's headers were being read
            raise self._aborted_error()
        return body

    def reattach(self, seen: int) -> Body | None:
        """Follow the generation again after the connection dropped, past its first ``seen`` updates.

        chat-ui HEAD keeps generating when a connection drops and replays the
        run at ``GET /conversation/{id}/stream`` (issue 21). ``None`` where
        that cannot be: another family or release, an abort, or after
        :data:`_REATTACH_LIMIT` attempts.
        """
        if (self.aborted or self._generation_id is None or self.conversation_id is None
                or self._reattached >= _REATTACH_LIMIT):
            return None
        self._reattached += 1
        try:
            body = self._transport.reattach(self.conversation_id, self._generation_id, seen, self._abort)
        except H2oError as exc:
            logger.info("could not follow conversation %s again: %s", self.conversation_id, exc)
            return None
        if body is not None:
            if self._body is not None:
                self._body.close(reuse=False)
            self._body = body
        return body

    def _stop_step(self, conversation_id: str) -> Step:
        """Stop-generating; with HEAD's stop point, so the server keeps what the caller saw (issue 21)."""
        if self._generation_id is None:
            return stop_step(conversation_id)
        # seenContentLength counts as JavaScript does: UTF-16 code units.
        seen = len(self.seen_text.encode("utf-16-le")) // 2
        return stop_step(conversation_id, {"generationId": self._generation_id, "seenContentLength": seen})

    def _adopt(self, conversation_id: str) -> None:
        """Take ``conversation_id`` as this turn's; refused if its owner closed meanwhile."""
        self.conversation_id = conversation_id
        if self._owner is not None and not self._owner._turn_created(conversation_id):
            self.fire(Event.CUT)
            self.delete_abandoned()  # the owner's close() ran before the id was known
            raise ValueError("this conversation is closed")

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """A request of the turn: its failure moves the phase on (an abort's as the abort)."""
        try:
            yield
        except FamilyChanged:
            raise  # not a failure: the turn starts over (_open)
        except BaseException as exc:
            self.fire(_failure(exc, self.aborted))
            if self.aborted:
                raise self._aborted_error() from exc
            raise

    def _aborted_error(self) -> IncompleteStreamError:
        return IncompleteStreamError("the stream was aborted", conversation_id=self.conversation_id)

    def finish(self, event: Event | str | None, drain: Callable[[], None] | None) -> str | None:
        """End the turn with ``event`` and clean up; never raises an ``Exception``.

        Args:
            event: What ended it, or its value (``None``: already fired).
            drain: Reads the rest of the reply into the stream, when the phase wants it.

        Returns:
            What the server stored (:attr:`Cleanup.stored`).
        """
        if event is not None:
            self.fire(Event(event))
        cleanup = CLEANUP[self.phase]
        family = self._family
        if family is not None and not family.stop_ends_reply and cleanup.stop:
            # v0.8-v0.9 ignore stop-generating (a chat-ui bug): cutting the connection is all there is.
            cleanup = Cleanup(stop=False, drain=False, stored=cleanup.stored)
        transport, conversation_id, body = self._transport, self.conversation_id, self._body
        deadline = time.monotonic() + transport.timeout.cleanup
        later: list[Step] = []
        try:
            if conversation_id is not None and self._owner is None:
                # A one-shot turn: the caller waits for none of it.
                later = [*([self._stop_step(conversation_id)] if cleanup.stop else []), delete_step(conversation_id)]
            elif conversation_id is not None and cleanup.stop:
                # A conversation's turn reads on after the stop, so history is what the server kept.
                run_steps(transport, conversation_id, [self._stop_step(conversation_id)], deadline)
                if cleanup.drain and self._keep_partial and body is not None and drain is not None:
                    body.set_deadline(deadline)
                    with contextlib.suppress(Exception):
                        drain()
        finally:
            self._abort.detach()
            if body is not None:
                # v0.7 never ends its body: its connection cannot be reused.
                reuse = self.phase is Phase.COMPLETED and (family is None or family.ends)
                if reuse:
                    body.set_deadline(deadline)
                body.close(reuse=reuse)
            try:
                if (
                    self._owner is not None and conversation_id is not None and family is not None
                    and self.phase is not Phase.ABANDONED and (family.stream == "jsonl" or self.phase is Phase.CUT)
                ):
                    # From 0.7 on the server keeps what happened (the user message even when
                    # generation failed); 0.4 keeps a stopped reply's text as it noticed the stop.
                    self.branch = transport.read_back(conversation_id, deadline)
            except Exception as exc:  # cleanup must not replace what is propagating
                logger.warning("could not read back conversation %s: %s", conversation_id, exc)
            try:
                if later:
                    assert conversation_id is not None
                    transport.defer(conversation_id, later)
            finally:
                self.fire(Event.CLEANED)
                transport.untrack(self)
                if self._owner is not None:
                    self._owner._turn_ends()
                self.done.set()
        return cleanup.stored

    def delete_abandoned(self) -> None:
        """Delete a conversation created for an owner that closed meanwhile (never raises)."""
        if self.conversation_id is not None:
            self._transport.defer(self.conversation_id, [delete_step(self.conversation_id)])

#: A cleanup request: what it does (for the log), method, path, and a JSON body or ``None``.
Step = tuple[str, str, str, Any]
"""One cleanup request: what it does (for the log), its method and its path."""


def stop_step(conversation_id: str, body: Any = None) -> Step:
    return "stop generating in", "POST", _protocol.stop_generating_path(conversation_id), body


def delete_step(conversation_id: str) -> Step:
    return "delete", "DELETE", _protocol.conversation_path(conversation_id), None


def run_steps(transport: Transport, conversation_id: str, steps: Sequence[Step], deadline: float) -> bool:
    """Send ``steps`` in order within ``deadline``; log failures, never raise an ``Exception``.

    A stop followed by a delete keeps half of the time for the delete.

    Returns:
        ``True`` if every step succeeded.
    """
    ok = True
    start = time.monotonic()
    for index, (what, method, path, body) in enumerate(steps):
        step_deadline = deadline
        if index < len(steps) - 1:
            step_deadline = min(deadline, start + (deadline - start) / 2)
        try:
            transport.cleanup_request(method, path, step_deadline, body)
        except Exception as exc:  # cleanup must not replace what is propagating
            ok = False
            logger.warning("could not %s conversation %s: %s", what, conversation_id, exc)
    return ok


# Seconds an idle cleaner thread waits for more work before it exits.
_IDLE = 2.0
# How often a turn follows its generation again after dropped connections (chat-ui HEAD).
_REATTACH_LIMIT = 5
_cleaners: weakref.WeakSet[Cleaner] = weakref.WeakSet()


class Cleaner:
    """Runs requests off the caller's path, in order, on a thread of its own.

    Cleanup (stop-generating, delete) and conversations created ahead
    (``prefetch``) go through it. The thread starts with the first job and
    ends after a while without one. :meth:`drain` waits for the jobs
    (``Client.close()``, and interpreter exit), then retries once each
    cleanup that failed.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._cond = threading.Condition()
        self._jobs: deque[Callable[[], None]] = deque()
        self._running = 0
        self._failed: list[tuple[str, Sequence[Step]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        _cleaners.add(self)

    def submit(self, conversation_id: str, steps: Sequence[Step], *, inline: bool = False) -> None:
        """Send cleanup ``steps`` in the background (or now, ``inline``); a failure is remembered for :meth:`drain`."""

        def job() -> None:
            deadline = time.monotonic() + self._transport.timeout.cleanup
            if not run_steps(self._transport, conversation_id, steps, deadline):
                with self._cond:
                    self._failed.append((conversation_id, steps))

        if inline:
            job()
        else:
            self.call(job)

    def call(self, job: Callable[[], None]) -> None:
        """Run ``job`` in the background (it must not raise; anything it raises is logged)."""
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="h2o-sdk-cleaner", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    if self._closed or (not self._cond.wait(_IDLE) and not self._jobs):
                        self._thread = None
                        self._cond.notify_all()
                        return
                job = self._jobs.popleft()
                self._running += 1
            try:
                job()
            except Exception:
                logger.exception("a background request failed")
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def wait(self, deadline: float) -> bool:
        """Wait until no job is pending or running; ``False`` if ``deadline`` came first."""
        with self._cond:
            while self._jobs or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def drain(self, deadline: float) -> None:
        """Wait for every job until ``deadline``, then retry the failed cleanups once."""
        if not self.wait(deadline):
            with self._cond:
                logger.warning("%d background request(s) still pending", len(self._jobs) + self._running)
            return
        with self._cond:
            failed, self._failed = self._failed, []
        for conversation_id, steps in failed:
            run_steps(self._transport, conversation_id, steps[-1:], deadline)  # the delete: what must happen

    def close(self, deadline: float) -> None:
        """:meth:`drain`, then end the thread."""
        self.drain(deadline)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def wait_idle(timeout: float = 10.0) -> bool:
    """Wait until every client's cleaner is idle (for tests); ``True`` if all are."""
    end = time.monotonic() + timeout
    return all(cleaner.wait(end) for cleaner in list(_cleaners))


@atexit.register
def _drain_at_exit() -> None:
    # Daemon threads still run while atexit handlers do: let the cleaners finish.
    for cleaner in list(_cleaners):
        cleaner.drain(time.monotonic() + cleaner._transport.timeout.cleanup)


# The C module under `signal`: its wrappers convert every number to an enum, 13 us a create
# here (1.4% of a chat's instructions, callgrind); the C functions take 1 us.
_signals: Any
try:
    import _signal as _signals  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover - not CPython
    _signals = signal
_SIGINT = int(signal.SIGINT)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while the block runs in the main thread, then raise it.

    A ``KeyboardInterrupt`` raised inside the create's request would lose its
    answer, the only place the new conversation's id is written, and leave
    the conversation on the server (issue 18.3). The wait is bounded by the
    request's timeouts. A handler of the program's own is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or (
        _signals.getsignal(_SIGINT) is not _signals.default_int_handler
    ):
        yield
        return
    held: list[int] = []
    previous = _signals.signal(_SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        _signals.signal(_SIGINT, previous)
        if held:
            raise KeyboardInterrupt


def _failure(exc: BaseException, aborted: bool) -> Event:
    """The event a failed create or send is."""
    if aborted or not isinstance(exc, Exception):
        return Event.CUT  # an abort, or KeyboardInterrupt
    if isinstance(exc, APIStatusError):
        return Event.REFUSED  # the server answered: it did nothing
    if isinstance(exc, APIConnectionError):
        return Event.REFUSED if exc.connect else Event.LOST
    if isinstance(exc, StreamError):
        return Event.REFUSED  # e.g. a create answer without an id
    return Event.CUT
