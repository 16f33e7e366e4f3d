"""The blocking :class:`Client`: a facade over the HTTP boundary, the server session and the lifecycle.

What a user sees lives below it: requests, retries, TLS and redirects in
:mod:`._http`; the family, the one session cookie, the welcome modal and the
model in :mod:`._session`; create, prompt, read back and cleanup in
:mod:`._operations`; a turn's life in :mod:`._lifecycle`; spares in
:mod:`._prefetch`. This module only checks arguments and wires them together.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from . import _protocol
from ._conversation import Conversation, FileInput, finish, load_files
from ._http import Abort, Http, Session
from ._lifecycle import Turn
from ._operations import Operations
from ._protocol import Family, Messages, Prompt
from ._resource import Resource
from ._session import ServerSession
from ._stream import DEFAULT_MAX_EVENT_SIZE, Stream
from ._types import DEFAULT_TIMEOUT, ConversationInfo, Reply, Timeout

__all__ = ["Client"]

logger = logging.getLogger("h2o_sdk")


class Client(Resource):
    """A blocking client for a HuggingFace chat-ui server of any era (the h2oGPT service first).

    Example::

        with h2o_sdk.Client() as client:
            for text in client.stream("Hi"):
                print(text, end="", flush=True)

    One ``requests.Session`` per client keeps the session cookie; the welcome
    modal is accepted once, before the first conversation, where the server
    has one. Every conversation the client creates is deleted again on every
    exit path.

    The client finds out by itself which protocol family the server speaks
    (:attr:`protocol`, :meth:`detect_protocol`): ``"0.4"`` (chat-ui v0.3-v0.6,
    the h2oGPT service), ``"0.7"``, ``"0.8"`` (v0.8.0-v0.9.1), ``"0.9"``
    (v0.9.2-v0.9.5) or ``"0.10"`` (v0.9.6, v0.10+, HuggingChat today).

    Thread contract: a client may be shared by threads; each :class:`Stream`
    belongs to one thread at a time.

    Credentials in ``base_url`` (``https://ann:s3cret@host``) are taken out of
    it and sent as HTTP Basic authentication to that service only; they never
    appear in ``base_url``, a ``Referer``, an error message or a log.

    Args:
        base_url: The service's root URL.
        model: The model id used when a call names none. When omitted, the
            h2oGPT service's model, or the first model the server lists if
            it lists models without that one.
        proxy: A proxy URL for every request (``http://``, ``https://``, or
            ``socks5://`` with the ``socks`` extra installed).
        timeout: A :class:`Timeout`, a number of seconds for both the connect
            and the idle read timeout, or a ``(connect, read)`` pair.
        max_retries: How often a failed request may be retried (0 disables).
        session: A ``requests.Session`` to use instead of a new one; the
            client does not close it, and its own settings (``verify``,
            ``cert``, proxies, auth) apply unless given here.
        headers: Extra headers sent with every request.
        verify: TLS verification, as ``requests`` takes it (bool, or the path
            of a CA bundle or directory). ``None``: the environment's
            (``REQUESTS_CA_BUNDLE``) or ``True``; with ``session=``, the session's.
        max_event_size: The largest stream event accepted, in bytes.
        max_connections: How many connections the client's own session keeps
            open for reuse (raise it for many concurrent streams; ignored
            with ``session=``).
        prefetch: Keep up to this many conversations created ahead (after the
            first use or :meth:`connect`, and again while a reply streams), so
            a prompt goes out at once: one round trip less before the first
            token. They are deleted at :meth:`close`. Off by default: on a
            logged-in account a spare empty conversation shows in the chat list.
        protocol: ``"auto"`` (detect on first need, with a few GETs that
            change nothing) or the family to speak: ``"0.4"``, ``"0.7"``,
            ``"0.8"``, ``"0.9"``, ``"0.10"``.
        cookies: Cookie names and values sent with every request, for
            deployments that need a logged-in session (HuggingChat: the
            browser's ``hf-chat`` and ``token`` cookies). Never logged.

    Raises:
        TypeError, ValueError: An argument is unusable.
    """

    def __init__(
        self,
        base_url: str = _protocol.DEFAULT_BASE_URL,
        *,
        model: str | None = None,
        proxy: str | None = None,
        timeout: Timeout | float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        session: Session | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_connections: int = 10,
        prefetch: int = 0,
        protocol: str = "auto",
        cookies: Mapping[str, str] | None = None,
    ) -> None:
        if model is not None:
            model = _check_model(model)
        protocol = _protocol.check_protocol(protocol)
        checked_cookies = _check_cookies(cookies)
        if isinstance(max_event_size, bool) or not isinstance(max_event_size, int) or max_event_size < 1:
            raise ValueError(f"max_event_size must be a positive whole number, not {max_event_size!r}")
        self.max_event_size = max_event_size
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a whole number >= 0, not {prefetch!r}")
        self._http = Http(
            base_url, proxy=proxy, timeout=Timeout.coerce(timeout), max_retries=max_retries, session=session,
            headers=headers, verify=verify, max_connections=max_connections, cookies=checked_cookies,
        )
        self._session = ServerSession(self._http, protocol=protocol, model=model, logged_in=bool(checked_cookies))
        self._operations = Operations(self._http, self._session, prefetch=prefetch)
        self._conversations: weakref.WeakSet[Conversation] = weakref.WeakSet()

    @property
    def base_url(self) -> str:
        """The service's root URL (without credentials)."""
        return self._http.base_url

    @property
    def model(self) -> str:
        """The model id used when a call names none."""
        return self._session.model

    @model.setter
    def model(self, model: str) -> None:
        self._session.name_model(_check_model(model))

    @property
    def timeout(self) -> Timeout:
        """The client's :class:`Timeout`."""
        return self._http.timeout

    @property
    def max_retries(self) -> int:
        """How often a failed request may be retried."""
        return self._http.max_retries

    @property
    def prefetch(self) -> int:
        """How many conversations the client keeps created ahead."""
        return self._operations.spares.size

    # -- public API -------------------------------------------------------

    def stream(
        self, messages: Messages, *, model: str | None = None, keep_tokens: bool | None = False,
        web_search: bool = False, files: Sequence[FileInput] | None = None, **parameters: Any,
    ) -> Stream:
        """Send a prompt in a new conversation and stream the reply.

        Args:
            messages: A ``str`` (one user message) or a sequence of
                ``{"role": ..., "content": ...}`` mappings, flattened like the
                seed's ``format_prompt``.
            model: The model id; the client's ``model`` when omitted.
            keep_tokens: Keep every :class:`Token` for ``stream.reply.tokens``
                (``None``: where tokens carry more than text, the ``"0.4"`` family).
            web_search: Let the server search the web first (0.7 to 0.9; see
                :meth:`Conversation.stream`).
            files: Files to attach (0.7 on): paths or ``(name, bytes, mime)`` triples.
            **parameters: TGI generation parameters (``temperature``, ``stop``,
                ``seed``, ``details`` ...), merged over the seed's defaults;
                only the ``"0.4"`` family takes them.

        Returns:
            A :class:`Stream`; nothing is sent until it is iterated.

        Raises:
            TypeError, ValueError: Bad messages, model, parameters (an
                unknown parameter name is a ``TypeError`` naming the closest
                valid one) or files, or a closed client; before any request.
            UnsupportedError: Parameters, ``web_search`` or ``files`` for a
                family that cannot take them (here when the family is known,
                else when the stream starts, before any conversation is created).
        """
        text = _protocol.format_prompt(messages)
        if web_search not in (True, False):
            raise TypeError(f"web_search must be a bool, not {web_search!r}")
        attachments = load_files(files)
        options = {"web_search": web_search, "files": bool(attachments)}
        if parameters:
            _protocol.check_parameter_values(parameters)  # bad parameters fail here, before any request
        if (known := self._session.known_family) is not None:
            known.check_parameters(parameters)
            known.check_options(**options)
        model = _check_model(model) if model is not None else None
        self._operations.check_open()

        def build(family: Family) -> tuple[Prompt, str | None]:
            family.check_parameters(parameters)
            family.check_options(**options)
            if not family.preprompt:
                return Prompt(text, parameters=parameters), None
            # A system message becomes the conversation's preprompt where the family has one.
            preprompt, rest = _protocol.split_system(messages)
            inputs = _protocol.format_prompt(rest) if preprompt is not None else text
            return Prompt(inputs, web_search=web_search, files=attachments), preprompt

        turn = Turn(self._operations, model=model, build=build)
        return Stream(turn, max_event_size=self.max_event_size, keep_tokens=keep_tokens)

    def conversation(
        self, *, id: str | None = None, model: str | None = None, keep: bool = False,
        system_prompt: str | None = None, **parameters: Any,
    ) -> Conversation:
        """Start a multi-turn conversation kept on the server, or open one the server has.

        Args:
            id: A server conversation of this session to continue (see
                :meth:`conversations`): its history, title and system prompt
                are read back now, and it is never deleted on close
                (``keep=True`` is implied; :meth:`Conversation.delete` deletes it).
            model: The model id; the client's ``model`` when omitted.
            keep: Leave the server conversation in place when it is closed.
            system_prompt: The conversation's system prompt: its ``preprompt``
                from chat-ui 0.7 on; 0.4 keeps none, so there it goes before
                the first message, in the seed's prompt format.
            **parameters: Generation parameters for every turn.

        Returns:
            A :class:`Conversation` (a context manager); for a new one
            nothing is sent before its first turn.

        Raises:
            TypeError, ValueError: Bad arguments, or a closed client.
            NotFoundError, ProtocolError: ``id`` names no conversation of this session.
            H2oError: The server refused, or the network failed (opening ``id``).
        """
        self._operations.check_open()
        model = _check_model(model) if model is not None else None
        _protocol.check_parameters(parameters)
        if parameters and (known := self._session.known_family) is not None:
            known.check_parameters(parameters)
        if system_prompt is not None:
            _protocol.check_text(system_prompt, "the system prompt")
        if id is not None and (not isinstance(id, str) or not id.strip()):
            raise ValueError(f"id must be a conversation id, not {id!r}")
        if id is not None and system_prompt is not None:
            raise ValueError("an existing conversation keeps its own system prompt: pass id or system_prompt")
        conversation = Conversation(self._operations, model=model, keep=keep or id is not None,
                                    parameters=parameters, max_event_size=self.max_event_size,
                                    system_prompt=system_prompt)
        if id is not None:
            conversation._open_existing(id)
        self._conversations.add(conversation)
        return conversation

    def conversations(self, limit: int | None = None) -> list[ConversationInfo]:
        """The session's conversations on the server, newest first, as the server lists them.

        Reading changes nothing on the server. chat-ui 0.4 and 0.7 list them in
        their page data (0.4 with no ``updated_at``), 0.8 and 0.9 under ``/api``,
        0.10 under ``/api/v2``; every page is read, up to ``limit`` conversations.

        Args:
            limit: At most this many (``None``: all).

        Raises:
            ValueError: A bad limit, or a closed client.
            H2oError: The server refused, or the network failed.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a whole number >= 0 or None, not {limit!r}")
        self._operations.check_open()
        return self._operations.list_conversations(limit)

    def delete_conversations(self) -> int:
        """Delete every conversation of the session on the server, as the web UI's "delete all" does.

        Up to 0.9 the settings page's form action (the conversations are
        counted first, since it does not say how many); in 0.10
        ``DELETE /api/v2/conversations``, which says.

        Returns:
            How many conversations were deleted.

        Raises:
            ValueError: The client is closed.
            H2oError: The server refused, or the network failed.
        """
        self._operations.check_open()
        return self._operations.delete_all()

    def chat(
        self, messages: Messages, *, model: str | None = None, keep_tokens: bool | None = None,
        web_search: bool = False, files: Sequence[FileInput] | None = None, **parameters: Any,
    ) -> Reply:
        """Send a prompt in a new conversation and wait for the whole reply.

        Takes the same arguments as :meth:`stream`; ``reply.tokens`` is kept
        where tokens carry more than their text (``"0.4"``), or with ``keep_tokens=True``.

        Returns:
            The :class:`Reply`.

        Raises:
            H2oError: As :class:`Stream` documents.
        """
        return finish(self.stream(messages, model=model, keep_tokens=keep_tokens, web_search=web_search, files=files,
                                  **parameters))

    def close(self) -> None:
        """Clean up everything the client started, then close its connections (idempotent).

        Streams still running (in other threads) are aborted and their
        conversations stopped and deleted; open conversations are deleted
        (unless made with ``keep=True``); the deletes still running in the
        background finish, and one that failed is tried once more; all of it
        within ``Timeout.cleanup``.
        Afterwards every use of the client, its streams and conversations
        raises ``ValueError``.
        """
        operations = self._operations
        if operations.closed:
            return
        operations.closed = True
        turns = operations.running()
        for turn in turns:
            turn.abort()
        for conversation in list(self._conversations):
            conversation.close()
        operations.spares.close()
        deadline = time.monotonic() + self.timeout.cleanup
        here = threading.current_thread()
        for turn in turns:
            if turn.thread is here:
                continue  # close() inside that stream's own loop: it cleans up once the loop goes on
            if not turn.done.wait(max(0.0, deadline - time.monotonic())):
                logger.warning("a stream of conversation %s was still cleaning up at close()", turn.conversation_id)
        operations.cleaner.close(deadline)  # the deletes in the background, and a retry of any that failed
        self._http.close()

    def connect(self) -> None:
        """Establish the client's server session now, and create the prefetched conversations.

        This opens the connection, detects the family, and makes the one
        server session every later request of the client shares (accepting
        the welcome modal where the server has one). Otherwise this happens on
        first use; calling it while the caller is busy with something else
        (reading the prompt, say) takes those round trips off the first
        reply's path.

        Raises:
            ValueError: The client is closed.
            H2oError: The server refused, or the network failed.
        """
        self._operations.check_open()
        self._session.connect(Abort())
        self._operations.spares.fill_now()

    def wait_cleanup(self, timeout: float | None = None) -> bool:
        """Wait until the cleanup running in the background has been sent.

        A stream ends for the caller when its reply has ended; its
        conversation is deleted (after a stop-generating, if it was cut short)
        by a background thread, on a connection of its own. (Where the server
        answers within 2 ms, as on loopback, the client sends them inline
        instead: the thread would cost more than the wait.) Tests that look
        at the server right after a call, and code about to fork, wait here;
        :meth:`close` always does.

        Args:
            timeout: Seconds to wait at most; ``None``: ``Timeout.cleanup``.

        Returns:
            ``True`` once nothing is pending, ``False`` if the time ran out.
        """
        limit = self.timeout.cleanup if timeout is None else timeout
        return self._operations.cleaner.wait(time.monotonic() + limit)

    @property
    def protocol(self) -> str | None:
        """The protocol family in use: the one configured, or the one detected; ``None`` until known."""
        family = self._session.known_family
        return family.name if family is not None else None

    def detect_protocol(self) -> str:
        """Find out which protocol family the server speaks, now (once per client; thread-safe).

        Detection asks at most three side-effect-free GETs (``/api/v2/feature-flags``,
        ``/api/models``, ``.../summarize``); new servers answer the first.

        Returns:
            The family's name, as :attr:`protocol` then holds it.

        Raises:
            ValueError: The client is closed.
            H2oError: The server is no chat-ui (the message says what it
                answered), or the network failed.
        """
        self._operations.check_open()
        return self._session.family(Abort()).name

    def models(self) -> list[str]:
        """The ids of the models the server serves.

        Raises:
            UnsupportedError: The server's family has no model list
                (``"0.4"``, ``"0.7"``).
            H2oError: The server refused, or the network failed.
        """
        self._operations.check_open()
        family = self._session.family(Abort())
        return self._session.list_models(family)

    def __repr__(self) -> str:
        return f"<Client {self.base_url} model={self.model!r}>"


def _check_cookies(cookies: object) -> dict[str, str]:
    if cookies is None:
        return {}
    if not isinstance(cookies, Mapping):
        raise TypeError(f"cookies must be a mapping of names to values, not {type(cookies).__name__}")
    checked = {}
    for name, value in cookies.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("cookies must map str names to str values")
        if not name or any(c in name for c in "=; \t\r\n") or any(c in value for c in ";\r\n"):
            raise ValueError(f"not a cookie name and value: {name!r}")  # the value is a credential: not shown
        checked[name] = value
    return checked


def _check_model(model: object) -> str:
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, not {type(model).__name__}")
    if not model.strip():
        raise ValueError("model must not be empty")
    return model
