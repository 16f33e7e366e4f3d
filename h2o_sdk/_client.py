"""The blocking :class:`Client`: one ``requests.Session``, timeouts, retries, the lifecycle.

``_send`` is the only place that sees ``requests`` and ``urllib3`` exceptions
and error statuses; everything above it speaks :mod:`h2o_sdk._exceptions`.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import importlib.util
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

import requests
import requests.adapters
import requests.cookies
import requests.structures
import requests.utils
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.ssl_

from . import _lifecycle, _protocol
from ._conversation import Conversation, finish
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    H2oError,
    ProtocolError,
    SessionCookieError,
    UnsupportedError,
    decode_body,
    parse_retry_after,
    status_error,
)
from ._lifecycle import Abort, Cleaner, Step, Turn
from ._protocol import FAMILIES, Family, Messages, Prompt, _detect, _readback, multipart_body
from ._resource import Resource
from ._stream import DEFAULT_MAX_EVENT_SIZE, Stream
from ._types import DEFAULT_TIMEOUT, Reply, Timeout
from ._version import __version__

__all__ = ["Client"]

logger = logging.getLogger("h2o_sdk")

_READ_SIZE = 64 * 1024
_MAX_ERROR_BODY = 64 * 1024
_MAX_DRAIN = 64 * 1024
# Statuses that say the server did nothing: retried for every request.
_NOTHING_DONE = frozenset({408, 429, 503})
# Below this round trip (loopback, a fast LAN) cleanup is sent inline: a background
# thread would cost more CPU (GIL hand-offs, ~0.4 ms a chat measured) than the wait.
_INLINE_RTT = 0.002
_MAX_REDIRECTS = 5
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_MAX_RETRY_AFTER = 60.0
_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
_JSON_ACCEPT = {"Accept": "application/json"}
_STREAM_ACCEPT = {"Accept": "text/event-stream, application/json"}
_ANY_ACCEPT = {"Accept": "*/*"}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_LOGIN_PAGE = re.compile(r"login|oauth|authorize|signin", re.IGNORECASE)
_LOGIN_HINT = (
    "this server needs a logged-in session: pass the cookies of one, e.g. Client(url, cookies={'hf-chat': ...}) "
    "(HuggingChat also needs its 'token' cookie; h2o-chat --cookie NAME=VALUE)"
)


def _sleep(seconds: float, abort: Abort | None = None) -> bool:
    """Wait before a retry; ``False`` if ``abort`` cut the wait short. Tests replace it."""
    if abort is None:
        time.sleep(seconds)
        return True
    return abort.sleep(seconds)


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
        session: requests.Session | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_connections: int = 10,
        prefetch: int = 0,
        protocol: str = "auto",
        cookies: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url, self._auth = _check_base_url(base_url)
        # Unless named, the model is the seed's, or the server's first if it lists models without it.
        self._model_named = model is not None
        self.model = _check_model(model) if model is not None else _protocol.DEFAULT_MODEL
        self._protocol = _protocol.check_protocol(protocol)
        self._family: Family | None = None if protocol == "auto" else FAMILIES[protocol]
        self._family_lock = threading.Lock()
        self._cookies = _check_cookies(cookies)
        self._roots: dict[str, str] = {}  # tree families: a new conversation's root, when create named it
        self.timeout = Timeout.coerce(timeout)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, not {max_retries!r}")
        self.max_retries = max_retries
        if isinstance(max_event_size, bool) or not isinstance(max_event_size, int) or max_event_size < 1:
            raise ValueError(f"max_event_size must be a positive whole number, not {max_event_size!r}")
        self.max_event_size = max_event_size
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError(f"session must be a requests.Session, not {type(session).__name__}")
        if verify is not None and not isinstance(verify, (bool, str)):
            raise TypeError(f"verify must be a bool or a CA bundle path, not {type(verify).__name__}")
        self._proxies = _check_proxy(proxy)
        self._headers = {"User-Agent": f"h2o-sdk/{__version__} python-requests/{requests.__version__}"}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            self._headers.update(headers)
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive whole number, not {max_connections!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a whole number >= 0, not {prefetch!r}")
        self.prefetch = prefetch
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # requests reads the environment (proxies, NO_PROXY, CA bundle, .netrc)
            # again on every request, which costs more than the request itself
            # here; read it once, for the one base URL this client talks to.
            found = session.merge_environment_settings(self.base_url, {}, None, verify, None)
            if self._proxies is None and found["proxies"]:
                self._proxies = dict(found["proxies"])
            verify = found["verify"] if found["verify"] is not None else True
            adapter = _Adapter(_ssl_context(verify), pool_maxsize=max_connections)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.auth = self._auth or requests.utils.get_netrc_auth(self.base_url)
            session.trust_env = False
            # Browsers send Secure cookies to http://localhost (a secure context); so do we,
            # so a production chat-ui on loopback keeps its session over plain http.
            session.cookies.set_policy(_CookiePolicy())
        self._session = session
        # With the caller's session, verify goes out only when the caller gave it (11.12).
        self._verify = verify
        # What Session.prepare_request would merge on every request, merged and
        # checked once. Checked for any session; kept only for a session this
        # client made, whose settings nobody else changes.
        prepared_base = _prepared_base(self.base_url, {**session.headers, **self._headers, **_JSON_ACCEPT})
        self._prepared_base = prepared_base if self._owns_session else None
        self._settings_lock = threading.Lock()
        self._settings_accepted = False
        self._models_checked = False
        self._listed: list[str] | None = None  # the models detection saw
        self._closed = False
        self._turns_lock = threading.Lock()
        self._turns: set[Turn] = set()
        self._conversations: weakref.WeakSet[Conversation] = weakref.WeakSet()
        self._cleaner = Cleaner(self)
        self._rtt: float | None = None  # a smoothed round trip of short requests, in seconds
        self._inline_below = _INLINE_RTT
        self._spares: list[str] = []  # conversations of self.model created ahead
        self._filling = 0  # prefetch creates under way

    # -- public API -------------------------------------------------------

    def stream(
        self, messages: Messages, *, model: str | None = None, keep_tokens: bool = False, **parameters: Any
    ) -> Stream:
        """Send a prompt in a new conversation and stream the reply.

        Args:
            messages: A ``str`` (one user message) or a sequence of
                ``{"role": ..., "content": ...}`` mappings, flattened like the
                seed's ``format_prompt``.
            model: The model id; the client's ``model`` when omitted.
            keep_tokens: Keep every :class:`Token` for ``stream.reply.tokens``.
            **parameters: TGI generation parameters (``temperature``, ``stop``,
                ``seed``, ``details`` ...), merged over the seed's defaults;
                only the ``"0.4"`` family takes them.

        Returns:
            A :class:`Stream`; nothing is sent until it is iterated.

        Raises:
            TypeError, ValueError: Bad messages, model or parameters (an
                unknown parameter name is a ``TypeError`` naming the closest
                valid one), or a closed client; before any request.
            UnsupportedError: Parameters for a family that takes none (here
                when the family is known, else when the stream starts, before
                any conversation is created).
        """
        text = _protocol.format_prompt(messages)
        if parameters:
            _protocol.check_parameter_values(parameters)  # bad parameters fail here, before any request
            if self._family is not None:
                self._family.check_parameters(parameters)
        model = _check_model(model) if model is not None else None
        self.check_open()

        def build(family: Family) -> tuple[Prompt, str | None]:
            family.check_parameters(parameters)
            if not family.preprompt:
                return Prompt(text, parameters=parameters), None
            # A system message becomes the conversation's preprompt where the family has one.
            preprompt, rest = _protocol.split_system(messages)
            return Prompt(_protocol.format_prompt(rest) if preprompt is not None else text), preprompt

        turn = Turn(self, model=model, build=build)
        return Stream(turn, max_event_size=self.max_event_size, keep_tokens=keep_tokens)

    def conversation(self, *, model: str | None = None, keep: bool = False, **parameters: Any) -> Conversation:
        """Start a multi-turn conversation kept on the server.

        Args:
            model: The model id; the client's ``model`` when omitted.
            keep: Leave the server conversation in place when it is closed.
            **parameters: Generation parameters for every turn.

        Returns:
            A :class:`Conversation` (a context manager); nothing is sent
            before its first turn.

        Raises:
            TypeError, ValueError: Bad model or parameters, or a closed client.
        """
        self.check_open()
        model = _check_model(model) if model is not None else None
        _protocol.check_parameters(parameters)
        if parameters and self._family is not None:
            self._family.check_parameters(parameters)
        conversation = Conversation(self, model=model, keep=keep, parameters=parameters)
        self._conversations.add(conversation)
        return conversation

    def chat(self, messages: Messages, *, model: str | None = None, **parameters: Any) -> Reply:
        """Send a prompt in a new conversation and wait for the whole reply.

        Takes the same arguments as :meth:`stream`.

        Returns:
            The :class:`Reply`.

        Raises:
            H2oError: As :class:`Stream` documents.
        """
        return finish(self.stream(messages, model=model, keep_tokens=True, **parameters))

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
        if self._closed:
            return
        self._closed = True
        with self._turns_lock:
            turns = list(self._turns)
        for turn in turns:
            turn.abort()
        for conversation in list(self._conversations):
            conversation.close()
        with self._turns_lock:
            spares, self._spares = self._spares, []
        for conversation_id in spares:
            self._delete(conversation_id)
        deadline = time.monotonic() + self.timeout.cleanup
        here = threading.current_thread()
        for turn in turns:
            if turn.thread is here:
                continue  # close() inside that stream's own loop: it cleans up once the loop goes on
            if not turn.done.wait(max(0.0, deadline - time.monotonic())):
                logger.warning("a stream of conversation %s was still cleaning up at close()", turn.conversation_id)
        self._cleaner.close(deadline)  # the deletes in the background, and a retry of any that failed
        if self._owns_session:
            self._session.close()

    def connect(self) -> None:
        """Open the connection and accept the welcome modal now, and create the prefetched conversations.

        Otherwise this happens on first use; calling it while the caller is
        busy with something else (reading the prompt, say) takes those round
        trips off the first reply's path.

        Raises:
            ValueError: The client is closed.
            H2oError: The server refused, or the network failed.
        """
        self.check_open()
        self._accept_settings()
        while self._reserve(1):
            self._create_spare()

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
        return self._cleaner.wait(time.monotonic() + limit)

    @property
    def protocol(self) -> str | None:
        """The protocol family in use: the one configured, or the one detected; ``None`` until known."""
        family = self._family
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
        self.check_open()
        return self.family(Abort()).name

    def models(self) -> list[str]:
        """The ids of the models the server serves.

        Raises:
            UnsupportedError: The server's family has no model list
                (``"0.4"``, ``"0.7"``).
            H2oError: The server refused, or the network failed.
        """
        self.check_open()
        family = self.family(Abort())
        return self._list_models(family)

    def __repr__(self) -> str:
        return f"<Client {self.base_url} model={self.model!r}>"

    # -- what a turn asks of the client (_lifecycle.Transport) ----------------

    def check_open(self) -> None:
        if self._closed:
            raise ValueError("this Client is closed")

    def track(self, turn: Turn) -> None:
        with self._turns_lock:
            self._turns.add(turn)

    def untrack(self, turn: Turn) -> None:
        with self._turns_lock:
            self._turns.discard(turn)

    def family(self, abort: Abort) -> Family:
        family = self._family
        if family is not None and (self._model_named or self._models_checked):
            return family
        with self._family_lock:
            if self._family is None:
                self._family = FAMILIES[self._detect(abort)]
                logger.info("%s speaks the chat-ui %s protocol", self.base_url, self._family)
            family = self._family
            if not self._model_named and not self._models_checked:
                self._pick_model(family, abort)
                self._models_checked = True
        return family

    def _detect(self, abort: Abort) -> str:
        """Run the probes of protocol-eras.md 9.1 until one decides."""
        seen = []
        for probe in _detect.PROBES:
            try:
                response = self._request("GET", probe, follow=False, reaccept=False, abort=abort)
                status, body = response.status_code, decode_body(response.content, response.headers.get(
                    "Content-Type", ""))
                content_type = response.headers.get("Content-Type", "")
            except APIStatusError as exc:
                status, body, content_type = exc.status_code, exc.body, exc.headers.get("Content-Type", "")
            found = _detect.decide(probe, status, content_type, body)
            if found is not None:
                if probe == "/api/models" and isinstance(body, list):
                    self._listed = _model_ids(body)  # the model list, already here
                return found
            seen.append(f"GET {probe} -> {status} {content_type or 'no content type'}")
        raise H2oError(
            f"{self.base_url} does not answer like a chat-ui server of any known era ({'; '.join(seen)}); check "
            "base_url (it must include the app's path, e.g. https://huggingface.co/chat), or name the family "
            "with protocol=..."
        )

    def _pick_model(self, family: Family, abort: Abort) -> None:
        """Use the server's first model when it lists models without the default one."""
        if family.models is None:
            return
        try:
            served = self._listed if self._listed is not None else self._list_models(family, abort)
        except H2oError as exc:
            logger.info("could not list the server's models: %s", exc)
            return
        if served and self.model not in served:
            logger.info("%s does not serve %s; using its first model, %s", self.base_url, self.model, served[0])
            self.model = served[0]

    def _list_models(self, family: Family, abort: Abort | None = None) -> list[str]:
        if family.models is None:
            raise UnsupportedError(
                f"chat-ui {family.releases} (protocol {family.name!r}) has no model list (/api/models came in v0.8)"
            )
        response = self._request("GET", family.models, reaccept=False, abort=abort)
        document = _json_or_none(response)
        if family.superjson and isinstance(document, Mapping):
            document = document.get("json")
        if not isinstance(document, list):
            raise ProtocolError(f"GET {family.models} did not answer a list of models: {response.text[:200]!r}")
        return _model_ids(document)

    def accept_settings(self, abort: Abort) -> None:
        if self._cookies:
            return  # a logged-in session: its settings are its owner's; a gate answer still accepts (405)
        self._accept_settings(abort)

    def create_conversation(self, model: str, abort: Abort, preprompt: str | None = None) -> str:
        body: dict[str, Any] = dict(_protocol.create_payload(model))
        if preprompt is not None:
            body["preprompt"] = preprompt
        try:
            response = self._request(
                "POST", _protocol.CONVERSATION_PATH, json_body=body, idempotent=False, abort=abort,
            )
        except APIStatusError as exc:
            _name_the_model(exc, model, "create a conversation")
            raise
        answer = _json_or_none(response)
        conversation_id = _protocol.parse_conversation_id(answer)
        root = _root_from_create(answer)
        if root is not None:
            with self._turns_lock:
                self._roots[conversation_id] = root
        return conversation_id

    def leaf(self, conversation_id: str, abort: Abort) -> str:
        with self._turns_lock:
            root = self._roots.pop(conversation_id, None)
        if root is not None:
            return root
        branch = self._read_branch(conversation_id, abort=abort)
        if not branch:
            raise ProtocolError(f"conversation {conversation_id} has no root message to answer under"
                                f"{self._family_hint()}")
        return branch[-1]["id"]

    def read_back(self, conversation_id: str, deadline: float) -> list[dict[str, str]] | None:
        try:
            return self._read_branch(conversation_id, deadline=deadline)
        except H2oError as exc:
            logger.warning("could not read back conversation %s: %s", conversation_id, exc)
            return None

    def _read_branch(
        self, conversation_id: str, *, abort: Abort | None = None, deadline: float | None = None
    ) -> list[dict[str, str]]:
        """The current branch the server stored, root first (bounded in size)."""
        family = self._family
        assert family is not None
        if family.read_back == "api2":
            path = f"/api/v2/conversations/{quote(conversation_id, safe='')}"
        else:
            path = _protocol.conversation_path(conversation_id) + "/__data.json"
        response = self._request("GET", path, headers=_ANY_ACCEPT, stream=True, abort=abort, deadline=deadline)
        try:
            body = response.raw.read(_readback.MAX_READ_BACK + 1, decode_content=True)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise APIConnectionError(f"connection broken while reading {path}: {exc}", method="GET",
                                     url=self.base_url + path) from exc
        finally:
            response.close()
        if len(body) > _readback.MAX_READ_BACK:
            raise ProtocolError(f"conversation {conversation_id} is larger than {_readback.MAX_READ_BACK} bytes")
        try:
            if family.read_back == "api2":
                messages = _readback.messages_from_api2(body)
            else:
                messages = _readback.messages_from_page(body)
        except ProtocolError as exc:
            if self._protocol != "auto":
                _add_to_message(exc, self._family_hint())
            raise
        return _readback.branch(messages)

    def open_prompt(self, conversation_id: str, prompt: Prompt, abort: Abort) -> _Body:
        family = self._family
        assert family is not None
        path = _protocol.conversation_path(conversation_id)
        payload = family.body(prompt)
        headers = dict(_STREAM_ACCEPT)
        data = None
        json_body: Any = payload
        if family.multipart:
            # A form content type: chat-ui's hook wants an Origin of this host (protocol-eras.md 1).
            data, content_type = multipart_body(payload)
            json_body = None
            parts = urlsplit(self.base_url)
            headers.update({"Content-Type": content_type, "Origin": f"{parts.scheme}://{parts.netloc}",
                            "Referer": self.base_url + path})
        response = self._request(
            "POST",
            path,
            json_body=json_body,
            data=data,
            headers=headers,
            stream=True,
            idempotent=False,
            follow=False,  # never re-post a prompt elsewhere (11.13)
            abort=abort,
        )
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in ("application/json", "text/html"):
            text = response.raw.read(_MAX_ERROR_BODY, decode_content=True).decode("utf-8", "replace")
            response.close()
            raise ProtocolError(
                f"POST {path} answered {content_type} where a reply stream was expected: {text[:200]!r}; is the "
                f"server chat-ui {family.releases} (protocol {family.name!r})? protocol='auto' detects it",
                conversation_id=conversation_id,
            )
        return _Body(response, self.timeout.read)

    def cleanup_request(self, method: str, path: str, deadline: float) -> None:
        # Cleanup still runs after close(), for the streams close() aborted; it
        # must not leave a reopened pool behind.
        try:
            self._request(method, path, deadline=deadline).close()
        finally:
            if self._closed and self._owns_session:
                self._session.close()

    def defer(self, conversation_id: str, steps: Sequence[Step]) -> None:
        rtt = self._rtt
        inline = rtt is not None and rtt < self._inline_below and not self._closed
        self._cleaner.submit(conversation_id, steps, inline=inline)

    def take_spare(self, model: str) -> str | None:
        with self._turns_lock:
            return self._spares.pop(0) if model == self.model and self._spares else None

    def refill(self, after: threading.Event) -> None:
        for _ in range(self._reserve()):
            self._cleaner.call(lambda: self._prefetch_one(after))

    def _reserve(self, at_most: int | None = None) -> int:
        """How many spares to create now, counted as under way until :meth:`_create_spare` ends."""
        with self._turns_lock:
            wanted = 0 if self._closed else max(self.prefetch - len(self._spares) - self._filling, 0)
            if at_most is not None:
                wanted = min(wanted, at_most)
            self._filling += wanted
            return wanted

    def _create_spare(self) -> None:
        """Create one reserved spare conversation (raises what the create raises)."""
        try:
            if not self._closed:
                self._accept_settings()
                self._add_spare(self.create_conversation(self.model, Abort()))
        finally:
            with self._turns_lock:
                self._filling -= 1

    def _prefetch_one(self, after: threading.Event) -> None:
        after.wait(self.timeout.connect + self.timeout.read)  # the prompt has its connection
        try:
            self._create_spare()
        except Exception as exc:  # the next prompt creates its own conversation
            logger.info("could not create a conversation ahead: %s", exc)

    def _add_spare(self, conversation_id: str) -> None:
        with self._turns_lock:
            closed = self._closed
            if not closed:
                self._spares.append(conversation_id)
        if closed:  # made while close() ran: not to be kept
            self._delete(conversation_id)

    def _delete(self, conversation_id: str) -> None:
        """Delete a conversation in the background (``close()`` waits for it); never raises."""
        self.defer(conversation_id, [_lifecycle.delete_step(conversation_id)])

    def _accept_settings(self, abort: Abort | None = None, *, again: bool = False) -> None:
        """Accept the welcome modal once per session, as the family does (protocol.md 1, 2.3;
        protocol-eras.md 3.1: JSON from v0.7, no gate from v0.10)."""
        family = self.family(abort or Abort())
        if family.settings is None:
            return
        with self._settings_lock:
            if self._settings_accepted and not again:
                return
            kind: dict[str, Any] = (
                {"form": family.settings_body(self.model)} if family.settings == "form"
                else {"json_body": family.settings_body(self.model)}
            )
            try:
                response = self._request(
                    "POST",
                    _protocol.SETTINGS_PATH,
                    headers={"Referer": self.base_url + "/"},
                    follow=False,  # its 303 is the success answer
                    reaccept=False,
                    abort=abort,
                    **kind,
                )
            except APIStatusError as exc:
                _name_the_model(exc, self.model, "accept the welcome modal")
                raise
            body = _json_or_none(response)
            if isinstance(body, Mapping) and body.get("type") in ("error", "failure"):
                status = body.get("status")
                raise status_error(
                    status if isinstance(status, int) and status >= 400 else 500,
                    body=body,
                    headers=response.headers,
                    method="POST",
                    url=self.base_url + _protocol.SETTINGS_PATH,
                )
            self._check_cookies(response)
            self._settings_accepted = True

    def _check_cookies(self, response: requests.Response) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme != "http" or (parts.hostname in _LOOPBACK and self._owns_session):
            return  # https, or loopback, where this client's jar sends Secure cookies as browsers do
        secure = sorted({cookie.name for cookie in response.cookies if cookie.secure})
        if secure:
            raise SessionCookieError(
                f"{self.base_url} set its session cookie ({', '.join(secure)}) with the Secure flag, "
                "so it is never sent back over plain http:// and every later request would be a new "
                "session. Use the https:// URL of the service (or run chat-ui in dev mode)."
            )

    # -- the one HTTP boundary ---------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        follow: bool = True,
        reaccept: bool = True,
        deadline: float | None = None,
        abort: Abort | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries, re-accepting the welcome modal once on 405.

        Args:
            idempotent: Retry any connection failure and 408/429/5xx. When
                ``False`` (create, prompt) only what cannot have reached the
                server is retried: a failed connect, and 408/429/503, which say
                nothing was done. Never a request written whose answer was
                lost: the server may have acted on it (11.6, 11.7).
            follow: Follow 307/308 redirects within the base URL (never elsewhere).
            deadline: Nothing may wait past this ``time.monotonic()`` value.
            abort: The turn's handle: its sockets are cut and its backoff
                sleeps interrupted by :meth:`Abort.abort`.
        """
        attempt = redirects = 0
        while True:
            timeout = self.timeout.connect, self.timeout.read
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise APITimeoutError(f"no time left for {method} {self.base_url}{path}", method=method,
                                          url=self.base_url + path)
                timeout = min(timeout[0], left), min(timeout[1], left)
            try:
                sent = time.monotonic()
                if abort is None:
                    response = self._send(method, path, timeout=timeout, **kwargs)
                else:
                    with abort.active(keep=bool(kwargs.get("stream"))):
                        response = self._send(method, path, timeout=timeout, **kwargs)
                if not kwargs.get("stream"):
                    elapsed = time.monotonic() - sent
                    self._rtt = elapsed if self._rtt is None else 0.7 * self._rtt + 0.3 * elapsed
                if not response.is_redirect or not follow:
                    if response.is_redirect and kwargs.get("stream"):
                        raise self._refused_redirect(response, method, path, "a prompt is never re-posted")
                    return response
                target = self._redirect_path(response, method, path)
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise self._refused_redirect(response, method, path, "too many redirects")
                response.close()
                path = target
                continue
            except APIStatusError as exc:
                if exc.status_code == 405 and reaccept and self._family is not None:
                    if self._family.settings is None:
                        if self._protocol == "auto":  # a named family's hint is in the message already
                            _add_to_message(exc, self._family_hint())
                        raise
                    logger.info("%s %s answered 405; accepting the welcome modal again", method, path)
                    reaccept = False
                    self._accept_settings(abort, again=True)
                    continue
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
                retryable = exc.status_code in _NOTHING_DONE or (idempotent and exc.status_code >= 500)
                if not retryable:
                    raise
                error: Exception = exc
            except APIConnectionError as exc:
                if not (exc.connect or idempotent) or isinstance(exc.__cause__, requests.exceptions.SSLError):
                    raise  # the server may have acted on it; or a TLS failure that a retry repeats
                error, retry_after = exc, None
            if attempt >= self.max_retries or (abort is not None and abort.aborted):
                raise error
            delay = _backoff(attempt, retry_after)
            if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
                raise error
            attempt += 1
            logger.info("%s %s failed (%s); retry %d in %.2fs", method, path, error, attempt, delay)
            if not _sleep(delay, abort):
                raise error

    def _redirect_path(self, response: requests.Response, method: str, path: str) -> str:
        """The path under ``base_url`` a redirect leads to; refused anywhere else (11.13)."""
        location = urljoin(self.base_url + path, response.headers.get("Location", ""))
        if response.status_code not in (307, 308):
            raise self._refused_redirect(response, method, path, "only 307/308 keep the request as it was")
        if not location.startswith(self.base_url + "/"):
            raise self._refused_redirect(response, method, path, "it leads away from the service's base URL")
        return location[len(self.base_url) :]

    def _refused_redirect(self, response: requests.Response, method: str, path: str, why: str) -> APIStatusError:
        location = _without_userinfo(urljoin(self.base_url + path, response.headers.get("Location", "")))
        response.close()
        if method == "POST" and response.status_code in (302, 303) and _LOGIN_PAGE.search(urlsplit(location).path):
            # chat-ui 0.10 with a login sends an anonymous write to its identity provider (protocol-eras.md 8.1).
            return AuthenticationError(
                f"the server redirected {method} {path} to a login page ({location.split('?')[0]}): {_LOGIN_HINT}",
                status_code=response.status_code, headers=response.headers, method=method, url=self.base_url + path,
            )
        return status_error(
            response.status_code,
            reason=response.reason or "",
            body=f"the server redirected {method} {path} to {location}, which is not followed: {why}",
            headers=response.headers,
            method=method,
            url=self.base_url + path,
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        timeout: tuple[float, float],
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
    ) -> requests.Response:
        url = self.base_url + path
        try:
            if self._prepared_base is not None:
                response = self._session.send(
                    self._prepare(method, path, headers, json_body, form, data),
                    stream=stream,
                    timeout=timeout,
                    verify=self._verify,
                    proxies=self._proxies or {},
                    allow_redirects=False,
                )
            else:
                response = self._session.request(
                    method,
                    url,
                    headers={**self._headers, **_JSON_ACCEPT, **(headers or {})},
                    json=json_body,
                    data=form if form is not None else data,
                    cookies=self._cookies or None,
                    proxies=self._proxies,
                    # The session's own verify, read now: requests would let
                    # $REQUESTS_CA_BUNDLE override a session's CA (its #3829).
                    verify=self._verify if self._verify is not None else self._session.verify,
                    auth=self._auth,
                    stream=stream,
                    timeout=timeout,
                    allow_redirects=False,
                )
        except requests.exceptions.ConnectTimeout as exc:
            raise APITimeoutError(
                self._offline_hint(f"timed out connecting to {url}"), method=method, url=url, connect=True
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise APITimeoutError(f"timed out waiting for {method} {url}", method=method, url=url) from exc
        except requests.exceptions.RequestException as exc:
            connect = _nothing_sent(exc)
            message = f"{method} {url} failed: {_reason(exc)}"
            raise APIConnectionError(
                self._offline_hint(message) if connect else message, method=method, url=url, connect=connect
            ) from exc
        logger.debug("%s %s -> %s", method, path, response.status_code)
        if response.status_code < 400:
            return response
        try:
            content = response.raw.read(_MAX_ERROR_BODY, decode_content=True) if stream else response.content
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
            content = b""
        finally:
            response.close()
        error = status_error(
            response.status_code,
            reason=response.reason or "",
            body=decode_body(content, response.headers.get("Content-Type", "")),
            headers=response.headers,
            method=method,
            url=url,
        )
        if response.status_code == 401:
            _add_to_message(error, f": {_LOGIN_HINT}")
        elif self._protocol != "auto" and response.status_code in (400, 403, 405, 500) and method == "POST":
            # A family named by the caller, and a server that rejects its requests: say what to try.
            _add_to_message(error, self._family_hint())
        raise error

    def _family_hint(self) -> str:
        family = self._family
        if family is None:
            return ""
        return (f"; is the server chat-ui {family.releases}, as protocol={family.name!r} says? protocol='auto' "
                "detects the family it speaks")

    def _offline_hint(self, message: str) -> str:
        if self.base_url != _protocol.DEFAULT_BASE_URL:
            return message
        return (
            f"{message}. The hosted h2oGPT service ({_protocol.DEFAULT_BASE_URL}) has been offline since 2023: "
            "pass the URL of a chat-ui server as base_url (h2o-chat --base-url URL), or run the local "
            "emulator (h2o-chat --local, or h2o_sdk.testing.serve())"
        )

    def _prepare(
        self, method: str, path: str, headers: Mapping[str, str] | None, json_body: Any,
        form: Mapping[str, str] | None, data: bytes | None,
    ) -> requests.PreparedRequest:
        """The request ``Session.prepare_request`` would build, without re-merging the session.

        That merging (settings, a copy of the cookie jar, URL and header checks)
        costs a third of a request here, and this client's own session holds
        nothing to merge that ``__init__`` has not merged and checked already.
        """
        assert self._prepared_base is not None
        base_url, base_headers = self._prepared_base
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = base_url + path
        prepared.headers = requests.structures.CaseInsensitiveDict(base_headers)
        if headers:
            prepared.headers.update(headers)
        # In PreparedRequest.prepare's order, so the headers go out in the same order.
        prepared._cookies = requests.cookies.RequestsCookieJar()  # type: ignore[attr-defined]
        cookie = requests.cookies.get_cookie_header(self._session.cookies, prepared)  # type: ignore[no-untyped-call]
        if self._cookies:
            # The caller's cookies, unless the server has set one of the same name since.
            present = {part.split("=", 1)[0].strip() for part in (cookie or "").split(";")}
            extra = "; ".join(f"{name}={value}" for name, value in self._cookies.items() if name not in present)
            cookie = f"{cookie}; {extra}" if cookie and extra else (cookie or extra)
        if cookie:
            prepared.headers["Cookie"] = cookie
        content_type = None
        if json_body is not None:
            prepared.body = json.dumps(json_body, allow_nan=False).encode()
            content_type = "application/json"
        elif form is not None:
            prepared.body = urlencode(form)
            content_type = "application/x-www-form-urlencoded"
        elif data is not None:
            prepared.body = data  # its Content-Type is in headers
        prepared.prepare_content_length(prepared.body)
        if content_type is not None:
            prepared.headers["Content-Type"] = content_type
        if self._session.auth is not None:
            prepared.prepare_auth(self._session.auth)
        prepared.prepare_hooks(self._session.hooks)
        return prepared


class _Body:
    """The prompt's open answer (``_lifecycle.Body``): its bytes, as they arrive."""

    def __init__(self, response: requests.Response, read_timeout: float) -> None:
        self._response = response
        self._read_timeout = read_timeout
        self._deadline: float | None = None
        self._chunks: Iterator[bytes] | None = None

    @property
    def sock(self) -> socket.socket | None:
        sock = getattr(getattr(self._response.raw, "_connection", None), "sock", None)
        return sock if isinstance(sock, socket.socket) else None

    def chunks(self) -> Iterator[bytes]:
        if self._chunks is None:
            self._chunks = self._read()
        return self._chunks

    def set_deadline(self, deadline: float) -> None:
        self._deadline = deadline

    def _read(self) -> Iterator[bytes]:
        raw = self._response.raw
        method, url = "POST", _without_userinfo(self._response.url)
        if raw.chunked and raw.supports_chunked_reads():
            # One HTTP chunk (one event, in practice) at a time, as it arrives;
            # urllib3's chunk reader costs far less per chunk than read1().
            pieces: Iterator[bytes] = raw.read_chunked(_READ_SIZE, decode_content=True)
        else:
            # A close-delimited body: read1() returns what has arrived.
            pieces = iter(lambda: raw.read1(_READ_SIZE, decode_content=True), b"")
        try:
            while True:
                if self._deadline is not None:
                    self._bound_next_read(url)
                chunk = next(pieces, None)
                if chunk is None:
                    return
                yield chunk
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise APITimeoutError(f"no data from {url} in time", method=method, url=url) from exc
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise APIConnectionError(f"connection broken while reading {url}: {exc}", method=method, url=url) from exc

    def _bound_next_read(self, url: str) -> None:
        """Make the next read wait no longer than the cleanup deadline allows (11.3)."""
        assert self._deadline is not None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise APITimeoutError(f"the cleanup deadline passed while reading {url}", method="POST", url=url)
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(min(left, self._read_timeout))

    def close(self, *, reuse: bool) -> None:
        response = self._response
        try:
            if reuse:
                # Read the (normally empty) rest so the connection can be reused.
                drained = 0
                for chunk in self.chunks():
                    drained += len(chunk)
                    if drained > _MAX_DRAIN:
                        break
        except Exception as exc:
            logger.debug("could not drain the answer: %s", exc)
        finally:
            response.close()


# -- connections a turn can cut, and one TLS context per client --------------------------


class _HTTPConnection(urllib3.connection.HTTPConnection):
    """Registers its socket with the turn running in this thread (``_lifecycle.Abort``)."""

    def connect(self) -> None:
        super().connect()
        _lifecycle.attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a reused connection: connect() does not run
            _lifecycle.attach_current(self.sock)
        super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _lifecycle.attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _lifecycle.attach_current(self.sock)
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS: dict[str, type[urllib3.connectionpool.HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """The client's own adapter: cancellable connections, and one TLS context for all of them.

    requests hands urllib3 the CA bundle's path, and urllib3 then builds a
    context and loads the bundle for every new connection: ~30 ms of CPU
    holding the GIL each, so 50 streams started at once waited on each other
    for 1.6 s (11.15). The context is built once, here.
    """

    def __init__(self, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools keep their own connection classes
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def close(self) -> None:
        # urllib3 2.8's PoolManager.clear() only forgets its pools and leaves their
        # idle sockets to the garbage collector; close them now (found by the soak test).
        managers = [self.poolmanager, *self.proxy_manager.values()]
        pools = [manager.pools[key] for manager in managers for key in list(manager.pools.keys())]
        super().close()
        for pool in pools:
            pool.close()

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        # requests puts the bundle's path back on the pool, and urllib3 would then load
        # it into the shared context again for every connection: the context has it.
        if url.lower().startswith("https"):
            conn.ca_certs = conn.ca_cert_dir = None

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: bool | str,
                                             cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") == "https":
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
            pool_kwargs["ssl_context"] = self._ssl_context
        return host_params, pool_kwargs


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context requests would build for ``verify``, built once.

    Raises:
        ValueError: ``verify`` names a CA bundle that cannot be loaded.
    """
    context = urllib3.util.ssl_.create_urllib3_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    path = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA bundle {path!r}: {exc}") from exc
    return context


def _name_the_model(exc: APIStatusError, model: str, what: str) -> None:
    """Say which model a bare chat-ui 500 is about (an unknown model id: protocol.md 2.3, 2.4)."""
    if exc.status_code in (400, 500):
        _add_to_message(exc, f": the server could not {what} with the model {model!r}; check that it serves that "
                             "model id (model=..., h2o-chat --model)")


def _nothing_sent(exc: requests.exceptions.RequestException) -> bool:
    """Whether a requests error happened before the request can have reached the server."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError,
                        requests.exceptions.SSLError)):
        return True
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError))


def _reason(exc: BaseException) -> str:
    """The root cause of a requests error, without urllib3's retry wrapping."""
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None) or inner or exc
    text = str(reason)
    # urllib3 prefixes the connection's repr: "HTTPConnection(host=..., port=...): Failed ..."
    return text.split("): ", 1)[1] if text.startswith(("HTTPConnection(", "HTTPSConnection(")) else text


def _backoff(attempt: int, retry_after: float | None) -> float | None:
    """Seconds before retry number ``attempt + 1``; ``None``: do not retry."""
    if retry_after is not None:
        return retry_after if retry_after <= _MAX_RETRY_AFTER else None
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * (1 << attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _check_base_url(base_url: object) -> tuple[str, tuple[str, str] | None]:
    """The base URL without credentials, and the credentials it held (for Basic auth).

    Raises:
        TypeError, ValueError: Not an http(s) URL, or one with spaces, a query or a fragment.
    """
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a str, not {type(base_url).__name__}")
    if base_url != base_url.strip() or any(c.isspace() for c in base_url):
        raise ValueError(f"base_url must not contain spaces: {_without_userinfo(base_url)!r}")
    parts = urlsplit(base_url)
    shown = _without_userinfo(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL, not {shown!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment: {shown!r}")
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = unquote(parts.username or ""), unquote(parts.password or "")
    return _without_userinfo(base_url).rstrip("/"), auth


def _prepared_base(base_url: str, headers: Mapping[str, str | bytes | None]) -> tuple[str, dict[str, str]]:
    """``base_url`` and ``headers`` as requests would send them, checked once.

    Raises:
        ValueError: A header or the URL is not something requests (and
            http.client, which sends header values as latin-1) can send.
    """
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(base_url + "/", None)
        # None removes a header, as in requests' own merging.
        prepared.prepare_headers({name: value for name, value in headers.items() if value is not None})
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL) as exc:
        raise ValueError(str(exc)) from exc
    assert prepared.url is not None and prepared.url.endswith("/")
    for name, value in prepared.headers.items():
        if isinstance(value, str):
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(
                    f"header {name!r} has a value that is not latin-1 ({value!r}); HTTP header values "
                    "are bytes: encode it (e.g. percent-encoding) before passing it"
                ) from None
    # http.client sends str header values as latin-1, so bytes ones are the same decoded so
    return prepared.url[:-1], {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in prepared.headers.items()}


class _CookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """Send ``Secure`` cookies to loopback hosts over http, as browsers do (localhost is a secure context)."""

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        host = urlsplit(request.get_full_url()).hostname
        if cookie.secure and host in _LOOPBACK:
            return True
        return bool(super().return_ok_secure(cookie, request))


def _add_to_message(exc: H2oError, text: str) -> None:
    """Say more in an error's message (``str()`` and ``args`` follow)."""
    exc.message += text
    exc.args = (exc.message,)


def _model_ids(models: list[Any]) -> list[str]:
    return [m["id"] for m in models if isinstance(m, Mapping) and isinstance(m.get("id"), str)]


def _root_from_create(answer: Any) -> str | None:
    """The root message id, when the create answer carries the conversation (chat-ui HEAD, 2026-07)."""
    seeded = answer.get("conversation") if isinstance(answer, Mapping) else None
    if not isinstance(seeded, str):
        return None
    try:
        document = json.loads(seeded)
    except (ValueError, RecursionError):
        return None
    data = document.get("json", document) if isinstance(document, Mapping) else None
    root = data.get("rootMessageId") if isinstance(data, Mapping) else None
    return root if isinstance(root, str) and root else None


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


def _check_proxy(proxy: object) -> dict[str, str] | None:
    if proxy is None:
        return None
    if not isinstance(proxy, str):
        raise TypeError(f"proxy must be a URL string, not {type(proxy).__name__}")
    scheme = urlsplit(proxy).scheme
    if scheme not in _PROXY_SCHEMES or not urlsplit(proxy).netloc:
        raise ValueError(f"proxy must be a URL with one of the schemes {', '.join(_PROXY_SCHEMES)}: {proxy!r}")
    if scheme.startswith("socks") and importlib.util.find_spec("socks") is None:
        raise ValueError(f"a {scheme}:// proxy needs PySocks: pip install 'h2o_sdk[socks]'")
    return {"http": proxy, "https": proxy}
