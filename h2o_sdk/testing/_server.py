"""A local emulator of the mid-2023 h2oGPT chat service (chat-ui 0.4 in front of TGI).

Written from ``shared/protocol.md`` with its own literals: it never imports the
client's protocol module, so it cannot share the client's bugs. Section
numbers in comments refer to that document.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._replies import default_reply, token_id, tokenize

__all__ = ["MODELS", "ChatServer", "Fault", "Record", "serve"]

logger = logging.getLogger("h2o_sdk.testing")

#: The models the emulator serves; the first is the default ``activeModel``.
MODELS = (
    "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1",
    "h2oai/h2ogpt-gm-oasst1-en-2048-open-llama-13b",
)

_COOKIE = "hf-chat"
_END_TEXT, _END_ID = "<|endoftext|>", 11
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
_GATE_EXEMPT = ("/settings", "/login", "/admin")
_CONV_ID = re.compile(r"^[0-9a-f]{24}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_INTERNAL = {"message": "Internal Error"}
_NOT_FOUND = {"message": "Conversation not found"}
# The conversation page's errors (chat-ui 0.4, observed on loopback 2026-12-02).
_PAGE_NOT_FOUND = "Conversation not found."
_PAGE_FORBIDDEN = ("You don't have access to this conversation. If someone gave you this link, ask them to use the "
                   "'share' feature instead.")
_SETTINGS_ERROR = {"type": "error", "error": {"message": "Internal Error"}}
_WELCOME = "You need to accept the welcome modal first"
_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html lang=\"en\">\n\t<head>\n\t\t<meta charset=\"utf-8\" />\n"
    "\t\t<title>{message}</title>\n\t</head>\n\t<body><h1>{status}</h1><p>{message}</p></body>\n</html>\n"
)
_TGI_BODIES: Mapping[int, Mapping[str, str]] = {
    422: {"error": "Input validation error: `inputs` must have less than 2048 tokens. Given: 4096",
          "error_type": "validation"},
    429: {"error": "Model is overloaded", "error_type": "overloaded"},
    500: {"error": "Request failed during generation: Server error: CUDA out of memory", "error_type": "generation"},
    503: {"error": "Model is overloaded", "error_type": "overloaded"},
}

Reply = str | Callable[[str], str]


@dataclass(frozen=True)
class Fault:
    """Something to go wrong (or a stream shape to use), at one step of the flow.

    Pass faults to :func:`serve` to apply them to every matching request, or
    to :meth:`ChatServer.inject` for the next ``times`` matching requests.

    Attributes:
        step: Where it applies: ``"settings"``, ``"create"``, ``"prompt"``,
            ``"stop"`` or ``"delete"``.
        status: Answer with this HTTP status instead (with a chat-ui body, or
            for ``"prompt"`` a TGI body; 429 and 503 carry ``Retry-After``).
        body: The error body to send with ``status`` (JSON-able or ``str``).
        retry_after: The ``Retry-After`` value sent with ``status``.
        error_after: Send an in-band error event after this many tokens.
        error_type: The in-band error's ``error_type``.
        error_message: The in-band error's message.
        drop_after: Close the connection after this many tokens, without the
            terminating chunk.
        stall: Seconds of silence (keep-alive comments aside) ...
        stall_after: ... after this many tokens.
        malformed_after: Send an event that is not JSON after this many tokens.
        oversized_after: Send an event of ``oversized_bytes`` after this many tokens.
        oversized_bytes: The size of that event's text.
        close_delimited: Send the stream without chunked encoding; its end is
            the connection's close.
        line_ending: ``"\\n"``, ``"\\r\\n"`` or ``"\\r"`` for the stream's lines.
        chunk_size: Split every event into pieces of this many bytes.
        delay: Seconds to wait before answering at all (before the status
            line); the step's work is done after the wait, as a slow server does.
        times: For :meth:`ChatServer.inject`: how many requests it applies to.
    """

    step: str = "prompt"
    status: int | None = None
    body: Any = None
    retry_after: str | None = None
    error_after: int | None = None
    error_type: str = "generation"
    error_message: str = "Request failed during generation: Server error: CUDA out of memory"
    drop_after: int | None = None
    stall: float = 0.0
    stall_after: int = 0
    malformed_after: int | None = None
    oversized_after: int | None = None
    oversized_bytes: int = 2 * 1024 * 1024
    close_delimited: bool = False
    line_ending: str = "\n"
    chunk_size: int | None = None
    delay: float = 0.0
    times: int = 1

    def __post_init__(self) -> None:
        if self.step not in ("settings", "create", "prompt", "stop", "delete"):
            raise ValueError(f"unknown step {self.step!r}")
        if self.line_ending not in ("\n", "\r\n", "\r"):
            raise ValueError(f"line_ending must be LF, CRLF or CR, not {self.line_ending!r}")


@dataclass(frozen=True)
class Record:
    """One request the server received, and its answer's status."""

    method: str
    path: str
    status: int
    session: str | None
    #: The client's port: requests on one kept-alive connection share it.
    port: int = 0


@dataclass
class _Conversation:
    id: str
    session: str
    model: str
    title: str
    messages: list[dict[str, str]] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False
    deleted: bool = False


@dataclass
class _Session:
    accepted: bool = False
    active_model: str = MODELS[0]


class ChatServer:
    """A running emulator. Use :func:`serve` to start one.

    Attributes:
        url: The base URL, e.g. ``http://127.0.0.1:53411``.
        requests: Every request received, in order (a :class:`Record` each).
        events_sent: How many stream events (tokens, errors) have been written.
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
        keepalive: float = 15.0,
        secure_cookie: bool = False,
        require_welcome: bool = True,
        rate_limit: int | None = None,
        faults: Sequence[Fault] = (),
        preprompt: str = "",
        upstream: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not models:
            raise ValueError("the server needs at least one model")
        self.models = tuple(models)
        self.reply = reply
        self.pace = pace
        self.first_token_delay = first_token_delay
        self.keepalive = keepalive
        self.secure_cookie = secure_cookie
        self.require_welcome = require_welcome
        self.rate_limit = rate_limit
        self.preprompt = preprompt
        if upstream is not None and urlsplit(upstream).scheme not in ("http", "https"):
            raise ValueError(f"upstream must be an http(s) URL of a TGI /generate_stream, not {upstream!r}")
        self.upstream = upstream
        self._upstreams: set[http.client.HTTPConnection] = set()
        self.requests: list[Record] = []
        self.events_sent = 0
        self._faults = list(faults)
        self._injected: list[Fault] = []
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._conversations: dict[str, _Conversation] = {}
        self._sent_by_session: dict[str, list[float]] = {}
        self._counter = 0
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler, self)
        self.scheme = "http"
        if ssl_context is not None:
            # The handshake runs in each connection's thread (_HTTPServer.finish_request).
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        bound_host, bound_port = str(self._httpd.server_address[0]), int(self._httpd.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"{self.scheme}://{shown}:{bound_port}"
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
        """A copy of a stored conversation (``title``, ``model``, ``messages``), or ``None``."""
        with self._lock:
            found = self._conversations.get(conversation_id)
            if found is None:
                return None
            return {"title": found.title, "model": found.model, "messages": [dict(m) for m in found.messages]}

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

    def _wait(self, wake: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` if woken (stop, delete, shutdown)."""
        if seconds <= 0:
            return wake.is_set() or self._stopping.is_set()
        return wake.wait(seconds) or self._stopping.is_set()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 stalls the sixth simultaneous connection for a second.
    request_queue_size = 1024

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError):
                return  # a client that refused the certificate: nothing to serve
        super().finish_request(request, client_address)

    def __init__(self, address: tuple[str, int], handler: type[_Handler], app: ChatServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up is normal here; anything else is logged, not printed.
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionResetError, BrokenPipeError)):
            logger.exception("the local server failed on a request from %s", client_address)

    def close_connections(self) -> None:
        # Wake handlers blocked reading an idle keep-alive connection.
        with self._connections_lock:
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass

    # -- plumbing -------------------------------------------------------------

    @property
    def app(self) -> ChatServer:
        return self.server.app

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, status: int) -> None:
        with self.app._lock:
            record = Record(self.command, self.path, status, self._session_id, int(self.client_address[1]))
            self.app.requests.append(record)

    def _cookie_header(self) -> str:
        expires = formatdate(time.time() + 365 * 24 * 3600, usegmt=True)
        flags = "HttpOnly; Secure; SameSite=None" if self.app.secure_cookie else "HttpOnly; SameSite=Lax"
        return f"{_COOKIE}={self._session_id}; Path=/; Expires={expires}; {flags}"

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        cookie: bool = True,
        chunked: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._record(status)
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if cookie:
            self.send_header("set-cookie", self._cookie_header())
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if body:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def _json(self, status: int, obj: Any, **kwargs: Any) -> None:
        self._send(status, _dumps(obj), content_type="application/json", **kwargs)

    def _hook_error(self, status: int, message: str) -> None:
        # 2.2.3: JSON when Accept or Content-Type mentions JSON, else bare text; no cookie.
        wants_json = "application/json" in (self.headers.get("Accept") or "") + (
            self.headers.get("Content-Type") or ""
        )
        if wants_json:
            self._send(status, _dumps({"error": message}), content_type="application/json", cookie=False,
                       chunked=True)
        else:
            self._send(status, message.encode(), content_type="text/plain", cookie=False, chunked=True)

    def _route_error(self, status: int, body: Mapping[str, Any]) -> None:
        # SvelteKit's errors: an HTML page for browsers (or no Accept at all), else JSON.
        accept = self.headers.get("Accept")
        if accept is None or "text/html" in accept:
            message = str(body.get("message") or "Internal Error")
            page = _ERROR_PAGE.format(message=message, status=status).encode()
            self._send(status, page, content_type="text/html; charset=utf-8")
        else:
            self._json(status, body)

    # -- the request hook (2.2) ---------------------------------------------------

    def _dispatch(self) -> None:
        body = self._read_body()
        path = urlsplit(self.path).path
        cookie = _cookie_value(self.headers.get("Cookie"))
        self._session_id = cookie or str(uuid.uuid4())
        app = self.app
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.command == "POST" and content_type in _FORM_TYPES:
            referer = self.headers.get("Referer")
            if not referer:
                return self._hook_error(403, "Non-JSON form requests need to have a referer")
            if _origin(referer) != _origin(f"{app.scheme}://{self.headers.get('Host', '')}"):
                return self._hook_error(403, "Invalid referer for POST request")
        with app._lock:
            session = app._sessions.get(self._session_id)
        gated = self.command not in ("GET", "HEAD", "OPTIONS") and not path.startswith(_GATE_EXEMPT)
        if gated and app.require_welcome and not (session and session.accepted):
            return self._hook_error(405, _WELCOME)
        try:
            self._route(path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _route(self, path: str, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        method = self.command
        if method == "POST" and parts == ["settings"]:
            return self._settings(body)
        if method == "POST" and parts == ["conversation"]:
            return self._create(body)
        if method in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "conversation":
            return self._page(parts[1])
        if len(parts) >= 2 and parts[0] == "conversation":
            conversation_id, rest = parts[1], parts[2:]
            if not _CONV_ID.match(conversation_id):
                return self._route_error(500, _INTERNAL)
            if method == "POST" and not rest:
                return self._prompt(conversation_id, body)
            if method == "DELETE" and not rest:
                return self._delete(conversation_id)
            if method == "PATCH" and not rest:
                return self._patch(conversation_id, body)
            if method == "POST" and rest == ["stop-generating"]:
                return self._stop(conversation_id)
            if method in ("GET", "HEAD") and rest in (["stop-generating"], ["summarize"]):
                # SvelteKit's answer for an endpoint without GET (what detection probes for).
                return self._send(405, b"GET method not allowed", content_type="text/plain;charset=UTF-8",
                                  headers={"allow": "POST"})
            if method == "POST" and rest == ["summarize"]:
                # Title generation needs a non-streaming endpoint; TGI's
                # /generate_stream cannot serve it (2.7).
                if self._target(conversation_id) is None:
                    return None
                return self._route_error(500, _INTERNAL)
        if method in ("GET", "HEAD") and not parts:
            page = b"<!doctype html><html><head><title>HuggingChat</title></head><body></body></html>"
            return self._send(200, page, content_type="text/html")
        return self._route_error(404, {"message": "Not found"})

    def _fault_status(self, fault: Fault | None, *, tgi: bool = False) -> bool:
        if fault is not None and fault.delay:
            self.app._stopping.wait(fault.delay)
        if fault is None or fault.status is None:
            return False
        body = fault.body
        if body is None:
            if tgi and fault.status in _TGI_BODIES:
                body = _TGI_BODIES[fault.status]
            elif fault.status == 429:
                body = {"message": "You are sending too many messages. Try again later."}
            elif fault.status == 404:
                body = _NOT_FOUND
            else:
                body = _INTERNAL
        headers = {}
        retry_after = fault.retry_after or ("1" if fault.status in (429, 503) else None)
        if retry_after:
            headers["retry-after"] = retry_after  # Node sends header names in lower case
        if isinstance(body, str):
            self._send(fault.status, body.encode(), content_type="text/plain", headers=headers)
        else:
            self._json(fault.status, body, headers=headers)
        return True

    # -- routes ---------------------------------------------------------------

    def _settings(self, body: bytes) -> None:
        app = self.app
        if self._fault_status(app._fault("settings")):
            return None
        content_type = (self.headers.get("Content-Type") or "").lower()
        if "application/x-www-form-urlencoded" not in content_type:
            return self._json(500, _SETTINGS_ERROR)  # 2.3: a JSON body fails
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        model = form.get("activeModel") or app.models[0]
        if model not in app.models:
            return self._json(500, _SETTINGS_ERROR)
        with app._lock:
            session = app._sessions.setdefault(self._session_id, _Session())
            # 2.3: any non-empty value counts as true, "false" included.
            session.accepted = bool(form.get("ethicsModalAccepted"))
            session.active_model = model
        referer = self.headers.get("Referer") or "/"
        if "text/html" in (self.headers.get("Accept") or ""):
            return self._send(303, headers={"location": referer}, chunked=True)
        return self._json(200, {"type": "redirect", "status": 303, "location": referer})

    def _create(self, body: bytes) -> None:
        app = self.app
        if self._fault_status(app._fault("create")):
            return None
        try:
            payload = json.loads(body)
            model = payload["model"]
        except (ValueError, KeyError, TypeError):
            return self._route_error(500, _INTERNAL)
        if model not in app.models:
            return self._route_error(500, _INTERNAL)
        messages: list[dict[str, str]] = []
        if "fromShare" in payload:
            return self._route_error(404, _NOT_FOUND)
        with app._lock:
            app._counter += 1
            conversation_id = secrets.token_hex(12)
            app._conversations[conversation_id] = _Conversation(
                conversation_id, self._session_id, model, f"Untitled {app._counter}", messages
            )
        self._send(200, _dumps({"conversationId": conversation_id}), content_type="application/json", chunked=True)

    def _owned(self, conversation_id: str) -> _Conversation | None:
        with self.app._lock:
            found = self.app._conversations.get(conversation_id)
        return found if found is not None and found.session == self._session_id else None

    def _target(self, conversation_id: str, step: str | None = None) -> _Conversation | None:
        """The session's conversation, or ``None`` once a fault or a 404 has been answered."""
        if step is not None and self._fault_status(self.app._fault(step)):
            return None
        conversation = self._owned(conversation_id)
        if conversation is None:
            self._route_error(404, _NOT_FOUND)
        return conversation

    def _page(self, conversation_id: str) -> None:
        """``GET /conversation/{id}`` as the real 0.4 answers it.

        A browser (``Accept`` with ``text/html``) gets the page: 200 while the
        conversation lives, 404 once it is deleted, 403 in another session,
        500 for a malformed id. Anything else reaches the endpoint, which has
        no GET: 405 whether or not the conversation exists.
        """
        if "text/html" not in (self.headers.get("Accept") or ""):
            return self._send(405, b"GET method not allowed", content_type="text/plain;charset=UTF-8",
                              headers={"allow": "POST, PATCH, DELETE"})
        if not _CONV_ID.match(conversation_id):
            return self._route_error(500, _INTERNAL)
        with self.app._lock:
            found = self.app._conversations.get(conversation_id)
        if found is None:
            return self._route_error(404, {"message": _PAGE_NOT_FOUND})
        if found.session != self._session_id:
            return self._route_error(403, {"message": _PAGE_FORBIDDEN})
        page = _ERROR_PAGE.replace("<h1>{status}</h1>", "").format(message=found.title, status=200)
        return self._send(200, page.encode(), content_type="text/html")

    def _delete(self, conversation_id: str) -> None:
        app = self.app
        conversation = self._target(conversation_id, "delete")
        if conversation is None:
            return None
        with app._lock:
            app._conversations.pop(conversation_id, None)
            conversation.deleted = True
            conversation.wake.set()
        self._send(200, chunked=True)

    def _stop(self, conversation_id: str) -> None:
        conversation = self._target(conversation_id, "stop")
        if conversation is None:
            return None
        conversation.stopped = True
        conversation.wake.set()
        self._send(200, chunked=True)

    def _patch(self, conversation_id: str, body: bytes) -> None:
        conversation = self._target(conversation_id)
        if conversation is None:
            return None
        try:
            title = json.loads(body)["title"]
        except (ValueError, KeyError, TypeError):
            return self._route_error(500, _INTERNAL)
        if not isinstance(title, str) or not 1 <= len(title) <= 100:
            return self._route_error(500, _INTERNAL)
        conversation.title = title
        self._send(200, chunked=True)

    def _prompt(self, conversation_id: str, body: bytes) -> None:
        app = self.app
        conversation = self._target(conversation_id)
        if conversation is None:
            return None
        if app.rate_limit is not None and not self._within_rate_limit():
            return self._route_error(429, {"message": "You are sending too many messages. Try again later."})
        try:
            payload = json.loads(body)
            inputs, options = _validate_prompt(payload)
        except (ValueError, KeyError, TypeError):
            return self._route_error(500, _INTERNAL)
        fault = app._fault("prompt")
        if self._fault_status(fault, tgi=True):
            return None
        history = list(conversation.messages)
        if options.get("is_retry"):
            index = next((i for i, m in enumerate(history) if m.get("id") == options.get("id")), None)
            if index is not None:
                history = history[:index]
        user = {"from": "user", "content": inputs, "id": options.get("id") or str(uuid.uuid4())}
        prompt = _build_prompt(app.preprompt, [*history, user])
        turn = _Turn(self, conversation, history, user, options, prompt)
        if app.upstream is not None:
            return _Forward(turn, payload).run()
        parameters = payload.get("parameters")
        _Generation(turn, parameters if isinstance(parameters, dict) else {}, fault).run()

    def _within_rate_limit(self) -> bool:
        app = self.app
        now = time.monotonic()
        with app._lock:
            sent = [t for t in app._sent_by_session.get(self._session_id, []) if now - t < 60]
            allowed = len(sent) < (app.rate_limit or 0)
            if allowed:
                sent.append(now)
            app._sent_by_session[self._session_id] = sent
        return allowed


class _Generation:
    """One TGI ``/generate_stream`` answer, relayed by chat-ui (2.5, 3)."""

    def __init__(self, turn: _Turn, parameters: Mapping[str, Any], fault: Fault | None) -> None:
        self.turn = turn
        self.handler = turn.handler
        self.app = turn.handler.app
        self.conversation = turn.conversation
        self.prompt = turn.prompt
        self.parameters = parameters
        self.fault = fault or Fault()
        self.eol = self.fault.line_ending.encode()
        self.connected = True

    def run(self) -> None:
        fault, conversation = self.fault, self.conversation
        conversation.stopped = False
        conversation.wake.clear()
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        if fault.close_delimited:
            headers["Connection"] = "close"
            self.handler.close_connection = True
        else:
            headers["Transfer-Encoding"] = "chunked"
        self.handler._record(200)
        self.handler.send_response(200)
        self.handler.send_header("content-type", "text/event-stream")
        for name, value in headers.items():
            self.handler.send_header(name, value)
        self.handler.send_header("set-cookie", self.handler._cookie_header())
        self.handler.end_headers()

        validation = _validation_error(self.parameters)
        if validation is not None:
            self._event({"error": validation, "error_type": "validation"})
            return self._end()
        pieces, finish_reason = self._plan()
        parts: list[str] = []
        if self._pause(self.app.first_token_delay):
            return self._cut(parts)
        for index, piece in enumerate(pieces):
            if fault.error_after == index:
                self._event({"error": fault.error_message, "error_type": fault.error_type})
                return self._end()
            if fault.drop_after == index:
                return self._drop()
            if fault.malformed_after == index:
                self._write_event(b"data:{\"token\": not json" + self.eol + self.eol)
            if fault.oversized_after == index:
                self._event(self._token(piece + "x" * fault.oversized_bytes))
            if fault.stall and fault.stall_after == index and self._pause(fault.stall):
                return self._cut(parts)
            if index and self._pause(self.app.pace):
                return self._cut(parts)
            parts.append(piece)
            last = index == len(pieces) - 1 and finish_reason != "eos_token"
            final = "".join(parts) if last else None
            self._event(self._token(piece), final=final, finish_reason=finish_reason, generated=len(parts))
        if finish_reason == "eos_token":
            if self._pause(self.app.pace):
                return self._cut(parts)
            end = self._token(_END_TEXT, special=True)
            self._event(end, final="".join(parts), finish_reason=finish_reason, generated=len(parts) + 1)
        # Saved before the terminator, so a client that has seen the end (and its
        # next prompt) always finds the history stored.
        self.turn.save("".join(parts))
        self._end()

    def _plan(self) -> tuple[list[str], str]:
        reply = self.app.reply
        text = reply(self.prompt) if callable(reply) else (reply if reply is not None else default_reply(self.prompt))
        pieces = tokenize(text)
        finish_reason = "eos_token"
        stops = self.parameters.get("stop") or []
        if isinstance(stops, list) and stops:
            so_far = ""
            for index, piece in enumerate(pieces):
                so_far += piece
                if any(isinstance(s, str) and s and s in so_far for s in stops):
                    pieces, finish_reason = pieces[: index + 1], "stop_sequence"
                    break
        limit = self.parameters.get("max_new_tokens")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else len(pieces) + 1
        # Reaching the limit exactly still ends on "length": TGI stops before the end token.
        if len(pieces) > limit or (len(pieces) == limit and finish_reason == "eos_token"):
            pieces, finish_reason = pieces[:limit], "length"
        return pieces, finish_reason

    def _token(self, text: str, *, special: bool = False) -> dict[str, Any]:
        tid = _END_ID if special else token_id(text)
        return {"id": tid, "text": text, "logprob": round(-(tid % 997) / 1000, 4), "special": special}

    def _event(
        self, obj: Mapping[str, Any], *, final: str | None = None, finish_reason: str = "", generated: int = 0
    ) -> None:
        if "error" not in obj:
            details = None
            if final is not None and self.parameters.get("details"):
                seed = self.parameters.get("seed")
                details = {"finish_reason": finish_reason, "generated_tokens": generated,
                           "seed": seed if isinstance(seed, int) else None}
            obj = {"token": obj, "generated_text": final, "details": details}
        self._write_event(b"data:" + _dumps(obj) + self.eol + self.eol)
        with self.app._lock:
            self.app.events_sent += 1

    def _write_event(self, data: bytes) -> None:
        size = self.fault.chunk_size
        pieces = [data[i : i + size] for i in range(0, len(data), size)] if size else [data]
        for piece in pieces:
            self._write(piece)

    def _write(self, data: bytes) -> None:
        if not self.connected:
            return
        try:
            if self.fault.close_delimited:
                self.handler.wfile.write(data)
            else:
                self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:
            # 2.5: a client that went away does not stop the generation.
            self.connected = False
            self.handler.close_connection = True

    def _pause(self, seconds: float) -> bool:
        """Wait, sending keep-alive comments on long silences; ``True`` if cut short."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            step = min(left, self.app.keepalive)
            if self.app._wait(self.conversation.wake, step):
                return True
            if left <= self.app.keepalive:
                return False
            self._write(b":" + self.eol + self.eol)

    def _end(self) -> None:
        if not self.fault.close_delimited:
            self._write_terminator()

    def _write_terminator(self) -> None:
        if self.connected:
            try:
                self.handler.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.handler.close_connection = True

    def _drop(self) -> None:
        self.handler.close_connection = True

    def _cut(self, parts: list[str]) -> None:
        # stop-generating (or delete, or shutdown): the connection closes without
        # the terminating chunk, and the partial reply is saved (2.7).
        self.handler.close_connection = True
        if self.conversation.stopped:
            self.turn.save("".join(parts))


@dataclass
class _Turn:
    """One prompt to answer: the request, the conversation, and what to store with the reply."""

    handler: _Handler
    conversation: _Conversation
    history: list[dict[str, str]]
    user: dict[str, str]
    options: Mapping[str, Any]
    prompt: str

    def save(self, text: str) -> None:
        """Store the user message and the reply together (2.5: only after the stream, or a stop)."""
        with self.handler.app._lock:
            if self.conversation.deleted:
                return
            reply_id = self.options.get("response_id") or str(uuid.uuid4())
            assistant = {"from": "assistant", "content": text, "id": reply_id}
            self.conversation.messages[:] = [*self.history, self.user, assistant]


class _Forward:
    """chat-ui in front of a real TGI: the client's body goes upstream with only
    ``inputs`` replaced by the history-built prompt; status, headers and bytes
    come back verbatim, plus the cookie (2.5). A stop takes effect at the next
    upstream chunk (2.7)."""

    _HOP_BY_HOP = ("transfer-encoding", "connection", "content-length", "keep-alive", "date", "server")

    def __init__(self, turn: _Turn, payload: Mapping[str, Any]) -> None:
        self.turn = turn
        self.handler = turn.handler
        self.app = turn.handler.app
        self.conversation = turn.conversation
        self.body = _dumps({**payload, "inputs": turn.prompt})

    def run(self) -> None:
        app, conversation, handler = self.app, self.conversation, self.handler
        target = urlsplit(app.upstream or "")
        kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        connection = kind(target.hostname or "127.0.0.1", target.port, timeout=300)
        try:
            connection.request("POST", target.path or "/", self.body,
                               {"Content-Type": "application/json", "Accept": "text/event-stream"})
            upstream = connection.getresponse()
        except OSError:
            connection.close()
            return handler._route_error(500, _INTERNAL)  # upstream unreachable (2.8)
        with app._lock:
            app._upstreams.add(connection)
        try:
            conversation.stopped = False
            conversation.wake.clear()
            handler._record(upstream.status)
            handler.send_response(upstream.status)
            for name, value in upstream.getheaders():
                if name.lower() not in self._HOP_BY_HOP:
                    handler.send_header(name, value)
            handler.send_header("set-cookie", handler._cookie_header())
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            self._relay(upstream)
        finally:
            with app._lock:
                app._upstreams.discard(connection)
            connection.close()

    def _relay(self, upstream: http.client.HTTPResponse) -> None:
        handler, conversation = self.handler, self.conversation
        pending = b""
        parts: list[str] = []
        final: str | None = None
        while True:
            try:
                data = upstream.read1(65536)
            except (OSError, http.client.HTTPException):
                data = None  # the upstream died: no terminating chunk, nothing saved (2.8)
            if conversation.wake.is_set() or self.app._stopping.is_set():
                handler.close_connection = True  # cut without the terminating chunk
                if conversation.stopped:
                    self.turn.save("".join(parts))
                return
            if data is None:
                handler.close_connection = True
                return
            if not data:
                break
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            pending += data
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data:"):
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    obj = json.loads(event[5:])
                    if not obj["token"]["special"]:
                        parts.append(obj["token"]["text"])
                    if obj.get("generated_text") is not None:
                        final = obj["generated_text"]
        if upstream.status == 200 and final is not None:
            self.turn.save(final)
        handler.wfile.write(b"0\r\n\r\n")


def _validate_prompt(payload: Any) -> tuple[str, Mapping[str, Any]]:
    """2.5.4: what chat-ui's zod schema checks; anything else raises."""
    inputs = payload["inputs"]
    options = payload["options"]
    if not isinstance(inputs, str) or not inputs.strip() or not isinstance(options, dict):
        raise ValueError("invalid body")
    for key in ("id", "response_id"):
        if key in options and not (isinstance(options[key], str) and _UUID.match(options[key])):
            raise ValueError(f"invalid {key}")
    if "is_retry" in options and not isinstance(options["is_retry"], bool):
        raise ValueError("invalid is_retry")
    if "web_search_id" in options and not isinstance(options["web_search_id"], str):
        raise ValueError("invalid web_search_id")
    return inputs, options


def _validation_error(parameters: Mapping[str, Any]) -> str | None:
    """TGI's parameter validation, sent as the first and only event (3.3)."""
    temperature = parameters.get("temperature")
    if isinstance(temperature, (int, float)) and temperature <= 0:
        return "Input validation error: `temperature` must be strictly positive"
    top_p = parameters.get("top_p")
    if isinstance(top_p, (int, float)) and not 0 < top_p < 1:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    limit = parameters.get("max_new_tokens")
    if isinstance(limit, int) and limit <= 0:
        return "Input validation error: `max_new_tokens` must be strictly positive"
    return None


def _build_prompt(preprompt: str, messages: Sequence[Mapping[str, str]]) -> str:
    """The h2ogpt-gm chat prompt chat-ui builds from the stored history (2.5)."""
    out = [preprompt]
    for message in messages:
        if message["from"] == "user":
            out.append(f"<|prompt|>{message['content']}<|endoftext|>")
        else:
            out.append(f"<|answer|>{message['content']}<|endoftext|>")
    out.append("<|answer|>")
    return "".join(out)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(obj: Any) -> bytes:
    # Node's JSON.stringify escapes a lone surrogate (well-formed JSON.stringify, ES2019);
    # it can only stand inside a string, so the escape is valid JSON there.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def _cookie_value(header: str | None) -> str | None:
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == _COOKIE and value:
            return value
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def serve(host: str = "127.0.0.1", port: int = 0, **options: Any) -> ChatServer:
    """Start a local chat-ui emulator in a background thread.

    Use it as a context manager; it stops cleanly on exit::

        with h2o_sdk.testing.serve(pace=0) as server:
            with h2o_sdk.Client(server.url) as client:
                print(client.chat("Hi"))

    Args:
        host: The address to bind; loopback unless told otherwise.
        port: The port; 0 picks a free one.
        **options: :class:`ChatServer` options: ``reply`` (a string or a
            function of the model prompt), ``pace`` (seconds between tokens),
            ``first_token_delay``, ``keepalive``, ``secure_cookie``,
            ``require_welcome``, ``rate_limit``, ``models``, ``faults``,
            ``preprompt``, and ``upstream``: the URL of a real TGI-compatible
            ``/generate_stream`` to forward prompts to, as chat-ui did.

    Returns:
        The running :class:`ChatServer`.
    """
    return ChatServer(host, port, **options).start()
