"""Conversations created ahead (``Client(prefetch=N)``), so a prompt goes out at once.

A spare is an empty conversation of the client's model. They are made after
the first use or ``connect()``, and again while a reply streams (once its
prompt has taken its pooled connection), on the cleaner's thread; the ones
left are deleted when the client closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ._http import Abort

__all__ = ["Spares"]

logger = logging.getLogger("h2o_sdk")


class Spares:
    """The pool of spare conversations.

    Args:
        size: How many to keep (0: none).
        create: Creates one conversation of the client's model (the welcome
            modal accepted first) and returns its id.
        model: The client's model now.
        run: Runs a job in the background (the cleaner's thread).
        delete: Deletes a conversation in the background.
        wait: Seconds a refill waits at most for the prompt to take its connection.
    """

    def __init__(
        self, size: int, *, create: Callable[[Abort], str], model: Callable[[], str],
        run: Callable[[Callable[[], None]], None], delete: Callable[[str], None], wait: float,
    ) -> None:
        self.size = size
        self._create = create
        self._model = model
        self._run = run
        self._delete = delete
        self._wait = wait
        self._lock = threading.Lock()
        self._ids: list[str] = []  # conversations of the client's model created ahead
        self._filling = 0  # creates under way
        self._closed = False

    @property
    def ids(self) -> list[str]:
        """The spares ready now, oldest first (a copy)."""
        with self._lock:
            return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._ids

    def take(self, model: str) -> str | None:
        """A spare of ``model``, if one is ready.

        A chat never waits for a spare still being created: measured at RTT 100 ms
        through TLS, that create often needs a connection of its own (its handshakes
        included), so waiting for it made back-to-back chats slower (2.07 RTT to the
        first token) than creating a conversation on the free pooled connection.
        """
        with self._lock:
            return self._ids.pop(0) if model == self._model() and self._ids else None

    def fill_now(self) -> None:
        """Create the missing spares in this thread, one at a time (``connect()``; raises what a create raises)."""
        while self._reserve(1):
            self._create_one()

    def refill(self, after: threading.Event) -> None:
        """Create the missing spares in the background, once ``after`` is set."""
        for _ in range(self._reserve()):
            self._run(lambda: self._create_later(after))

    def close(self) -> None:
        """Delete the spares (in the background); spares still being made are deleted when made."""
        with self._lock:
            self._closed = True
            ids, self._ids = self._ids, []
        for conversation_id in ids:
            self._delete(conversation_id)

    def _reserve(self, at_most: int | None = None) -> int:
        """How many spares to create now, counted as under way until :meth:`_create_one` ends."""
        with self._lock:
            wanted = 0 if self._closed else max(self.size - len(self._ids) - self._filling, 0)
            if at_most is not None:
                wanted = min(wanted, at_most)
            self._filling += wanted
            return wanted

    def _create_one(self) -> None:
        try:
            if not self._closed:
                self._add(self._create(Abort()))
        finally:
            with self._lock:
                self._filling -= 1

    def _create_later(self, after: threading.Event) -> None:
        after.wait(self._wait)  # the prompt has its connection
        try:
            self._create_one()
        except Exception as exc:  # the next prompt creates its own conversation
            logger.info("could not create a conversation ahead: %s", exc)

    def _add(self, conversation_id: str) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._ids.append(conversation_id)
        if closed:  # made while close() ran: not to be kept
            self._delete(conversation_id)
