"""A local emulator of chat-ui, in every era the SDK speaks (the h2oGPT service's 0.4 by default).

Written from ``shared/protocol.md`` and ``shared/protocol-eras.md`` with its
own literals: it never imports the client's modules, so it cannot share the
client's bugs. The HTTP plumbing, sessions, storage and faults are shared
(``_http``, ``_store``); each family's hook, routes and stream writer live in
their own module (``_v04``; ``_jsonl``, driven by the data tables of ``_era``
filled in ``_v07`` ... ``_v010``); calls to a real model server are in ``_upstream``.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from ._extras import Search, fake_search
from ._http import Handler, HTTPServer
from ._store import MODELS, Conversation, Fault, RateLimiter, Record, Reply, Session
from ._upstream import APIS, list_models

__all__ = ["MODELS", "PROTOCOLS", "ChatServer", "Fault", "Record", "serve"]

#: The families ``protocol=`` takes.
PROTOCOLS = ("0.4", "0.7", "0.8", "0.9", "0.10")


def handler_class(protocol: str) -> type[Handler]:
    """The request handler of a family."""
    if protocol == "0.4":
        from ._v04 import Handler04

        return Handler04
    from ._jsonl import handler_for

    return handler_for(protocol)


class ChatServer:
    """A running emulator. Use :func:`serve` to start one.

    Attributes:
        url: The base URL, e.g. ``http://127.0.0.1:53411``.
        requests: Every request received, in order (a :class:`Record` each).
        events_sent: How many stream events (tokens, errors) have been written.
        protocol: The chat-ui family it speaks: ``"0.4"`` (the default),
            ``"0.7"``, ``"0.8"``, ``"0.9"`` or ``"0.10"``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: Sequence[str] = MODELS,
        reply: Reply | None = None,
        pace: float = 0.03,
        first_token_delay: float = 0.0,
        keepalive: float | None = None,
        secure_cookie: bool = False,
        require_welcome: bool = True,
        rate_limit: int | None = None,
        faults: Sequence[Fault] = (),
        preprompt: str = "",
        upstream: str | None = None,
        upstream_api: str | None = None,
        upstream_key: str | None = None,
        upstream_timeout: float = 60.0,
        model_parameters: Mapping[str, Any] | None = None,
        chat_template: Callable[[Sequence[Mapping[str, str]]], str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        protocol: str = "0.4",
        require_login: bool = False,
        users: Mapping[str, str] | None = None,
        base_path: str = "",
        hold_open: float = 30.0,
        stop_poll: float = 1.0,
        stop_ignore: float = 30.0,
        search: Search | Sequence[Mapping[str, str]] | str | None = "fake",
        release: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("the server needs at least one model")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(map(repr, PROTOCOLS))}, not {protocol!r}")
        if base_path and (not base_path.startswith("/") or base_path.endswith("/")):
            raise ValueError(f"base_path must start with / and not end with one, like '/chat': {base_path!r}")
        self.protocol = protocol
        # "0.10" acts out the newest release of its family, chat-ui HEAD (resumable generations),
        # unless told to answer exactly as the tagged v0.10.0 does.
        if release not in (None, "HEAD", "v0.10.0") or (release is not None and protocol != "0.10"):
            raise ValueError(f"release is 'HEAD' or 'v0.10.0', for protocol '0.10' only, not {release!r}")
        self.release = release or ("HEAD" if protocol == "0.10" else None)
        self.head = self.release == "HEAD"
        self.require_login = require_login
        self.users = dict(users or {})
        self.base_path = base_path
        self.hold_open = hold_open
        self.stop_poll = stop_poll
        self.stop_ignore = stop_ignore
        self._started = time.monotonic()
        handler = handler_class(protocol)
        # keep-alive writes while waiting: the family's own rhythm unless told
        self.keepalive = keepalive if keepalive is not None else handler.default_keepalive
        self.models = tuple(models)
        self.reply = reply
        self.pace = pace
        self.first_token_delay = first_token_delay
        self.secure_cookie = secure_cookie
        self.require_welcome = require_welcome
        self.rate_limit = rate_limit
        self.preprompt = preprompt
        if upstream is not None and urlsplit(upstream).scheme not in ("http", "https"):
            raise ValueError(f"upstream must be the http(s) URL of a model server, not {upstream!r}")
        # Each release's own kind of model server unless told: TGI up to 0.9, OpenAI-compatible from 0.10.
        self.upstream_api = upstream_api or ("openai" if protocol == "0.10" else "tgi")
        if self.upstream_api not in APIS:
            raise ValueError(f"upstream_api must be one of {', '.join(map(repr, APIS))}, not {upstream_api!r}")
        self.upstream = upstream
        self.upstream_key = upstream_key
        self.upstream_timeout = upstream_timeout  # seconds of a silent model server before it counts as gone
        # The model's configured generation parameters, sent to a TGI model server as 0.7-0.9 send them,
        # and a prompt template of the caller's (chat-ui's chatPromptTemplate) in place of the release's own.
        self.model_parameters = dict(model_parameters or {})
        self.chat_template = chat_template
        if upstream is not None and self.upstream_api == "openai":
            # chat-ui 0.10 serves the models its OpenAI-compatible server lists (GET {url}/models).
            with contextlib.suppress(OSError, ValueError):
                listed = list_models(upstream, upstream_key)
                if listed:
                    self.models = tuple(listed)
        self._upstreams: set[http.client.HTTPConnection] = set()
        # The web search engine: made-up results locally; in front of a real model server, as a release
        # without a search key (an error update, no sources), unless told.
        if search == "fake":
            search = fake_search if upstream is None else None
        elif isinstance(search, str):
            raise ValueError(f"search must be a function, a list of results, None or 'fake', not {search!r}")
        elif search is not None and not callable(search):
            results = [dict(r) for r in search]
            search = lambda query: results  # noqa: E731
        self.search: Search | None = search
        self.requests: list[Record] = []
        self.events_sent = 0
        self._faults = list(faults)
        self._injected: list[Fault] = []
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._conversations: dict[str, Conversation] = {}
        self._runs = _Runs()  # HEAD: (conversation id, generationId) -> the run, for /stream
        self._limiter = RateLimiter(rate_limit)
        self._counter = 0
        self._stopping = threading.Event()
        self._httpd = HTTPServer((host, port), handler, self)
        self.scheme = "http"
        if ssl_context is not None:
            # The handshake runs in each connection's thread (_HTTPServer.finish_request).
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        bound_host, bound_port = str(self._httpd.server_address[0]), int(self._httpd.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"{self.scheme}://{shown}:{bound_port}{base_path}"
        self._thread: threading.Thread | None = None

    # -- running ------------------------------------------------------------

    def start(self) -> ChatServer:
        """Serve in a background thread; returns the server."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="h2o-chat-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`close` is called from another one."""
        self._httpd.serve_forever()

    def close(self) -> None:
        """Stop serving, end every stream and connection, and wait for them."""
        self._stopping.set()
        with self._lock:
            for conversation in self._conversations.values():
                conversation.wake.set()
            for connection in self._upstreams:  # wake handlers blocked on a silent upstream
                if connection.sock is not None:
                    with contextlib.suppress(OSError):
                        connection.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what tests look at --------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Apply ``fault`` to the next ``fault.times`` requests of its step."""
        with self._lock:
            self._injected.append(fault)

    @property
    def live_conversations(self) -> int:
        """How many conversations exist (created and not deleted), all sessions."""
        with self._lock:
            return len(self._conversations)

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """A copy of a stored conversation, or ``None``.

        ``messages`` is the current branch as ``{"from", "content", "id"}``,
        with ``files`` where a message has some (tree families leave out their system root); tree families (0.8 on)
        add ``tree``, every stored message with its ``ancestors`` and ``children``.
        """
        with self._lock:
            found = self._conversations.get(conversation_id)
            if found is None:
                return None
            out: dict[str, Any] = {
                "title": found.title, "model": found.model,
                "messages": [{**{k: m[k] for k in ("from", "content", "id")},
                              **({"files": list(m["files"])} if m.get("files") else {})} for m in found.branch()],
            }
            if found.root_id is not None:
                out["tree"] = [dict(m) for m in found.messages]
            return out

    def paths(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far, conversation ids kept."""
        with self._lock:
            return [(r.method, r.path) for r in self.requests]

    # -- internals used by the handler ---------------------------------------

    def _fault(self, step: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._injected):
                if fault.step == step:
                    if fault.times <= 1:
                        del self._injected[index]
                    else:
                        self._injected[index] = replace(fault, times=fault.times - 1)
                    return fault
            return next((f for f in self._faults if f.step == step), None)

    def _logged_in(self, cookie: str | None) -> bool:
        return cookie is not None and cookie in self.users

    def _wait(self, wake: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` if woken (stop, delete, shutdown)."""
        if seconds <= 0:
            return wake.is_set() or self._stopping.is_set()
        return wake.wait(seconds) or self._stopping.is_set()



class _Runs(dict[tuple[str, str], Any]):
    """HEAD's kept runs; the oldest go once there are many (a server of tests runs for minutes)."""

    LIMIT = 1000

    def __setitem__(self, key: tuple[str, str], value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.LIMIT:
            del self[next(iter(self))]


def serve(host: str = "127.0.0.1", port: int = 0, **options: Any) -> ChatServer:
    """Start a local chat-ui emulator in a background thread.

    Use it as a context manager; it stops cleanly on exit::

        with h2o_sdk.testing.serve(pace=0) as server:
            with h2o_sdk.Client(server.url) as client:
                print(client.chat("Hi"))

    Args:
        host: The address to bind; loopback unless told otherwise.
        port: The port; 0 picks a free one.
        **options: :class:`ChatServer` options: ``protocol`` (the chat-ui
            family: ``"0.4"``, the default, ``"0.7"``, ``"0.8"``, ``"0.9"``,
            ``"0.10"``), ``reply`` (a string or a function of the model
            prompt), ``pace`` (seconds between tokens), ``first_token_delay``,
            ``keepalive`` (seconds between keep-alive writes while waiting;
            the family's own rhythm by default), ``secure_cookie``,
            ``require_welcome``, ``rate_limit`` (messages per minute),
            ``models``, ``faults``, ``preprompt``, ``require_login`` with
            ``users`` (cookie values that count as logged in), ``base_path``
            (an app path such as ``"/chat"``), ``hold_open`` (how long 0.7
            keeps a finished response open, at most), ``stop_poll`` and
            ``stop_ignore`` (0.4 notices a stop on a poll every 1 s and
            ignores another stop of the conversation for 30 s), and ``upstream``:
            the URL of a real model server to forward prompts to, as the
            release does: with ``upstream_api="tgi"`` (the default up to
            ``"0.9"``) a TGI ``/generate_stream`` URL for ``"0.4"``, which passes
            its answer through, or a TGI endpoint URL from ``"0.7"`` on, posted
            to as ``@huggingface/inference`` does; with ``upstream_api="openai"``
            (the default for ``"0.10"``) an OpenAI-compatible base URL such as
            ``http://127.0.0.1:8000/v1`` (``POST /chat/completions``, and its
            ``GET /models`` as the model list), with ``upstream_key`` as the
            bearer token; ``model_parameters`` (the model's generation
            parameters, sent to a TGI model server from ``"0.7"`` on as the
            release sends them), ``chat_template`` (a function of the
            ``{"role", "content"}`` messages, the system prompt first, that
            makes the prompt in place of the release's template, as
            ``chatPromptTemplate`` does) and ``upstream_timeout`` (seconds a
            silent model server may take before it counts as gone); ``search``
            (the web-search engine from ``"0.7"`` to ``"0.9"``: ``"fake"``, the
            default, makes up two results per query without a model server and
            is off in front of one; ``None`` acts out a release with no engine
            configured, which sends an error update and answers without
            sources; or a list of ``{"title", "link"}`` results, or a function
            of the query that returns them); ``release`` (``"0.10"`` only:
            ``"HEAD"``, the default, acts out chat-ui's newest code, with
            resumable generations and stop points; ``"v0.10.0"`` answers
            exactly as that tag does).

    Returns:
        The running :class:`ChatServer`.
    """
    return ChatServer(host, port, **options).start()

