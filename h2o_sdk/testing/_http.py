"""The emulator's HTTP plumbing, shared by every family: the threaded server and the handler base."""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._store import COOKIE, FORM_TYPES, NOT_FOUND, SVELTE_PAGE, Conversation, Fault, Record, dumps, origin

logger = logging.getLogger("h2o_sdk.testing")


class HTTPServer(ThreadingHTTPServer):
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

    def __init__(self, address: tuple[str, int], handler: type[Handler], app: Any) -> None:
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



class Handler(BaseHTTPRequestHandler):
    """The HTTP plumbing of every family: answers, cookies, the hook's and SvelteKit's error shapes.

    A family's handler subclasses it and defines ``_dispatch`` (its hook and routes).
    """

    #: How long the session cookie lives (0.4: a year; from 0.7: two weeks).
    cookie_lifetime = 365 * 24 * 3600.0
    #: Only POST answers set the cookie (from 0.7 on).
    cookie_on_post_only = False
    #: Seconds between keep-alive writes while a stream waits, unless the server is told otherwise.
    default_keepalive = 15.0
    _session_id: str

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass

    # -- plumbing -------------------------------------------------------------

    @property
    def app(self) -> Any:
        return self.server.app

    def _app_path(self) -> str | None:
        """The request's path under the app's base path (``APP_BASE``); ``None`` outside it."""
        path = urlsplit(self.path).path
        base = self.app.base_path
        if not base:
            return path
        if path != base and not path.startswith(base + "/"):
            return None
        return path[len(base):] or "/"

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, status: int) -> None:
        with self.app._lock:
            record = Record(self.command, self.path, status, self._session_id, int(self.client_address[1]))
            self.app.requests.append(record)

    def _cookie_header(self) -> str:
        expires = formatdate(time.time() + self.cookie_lifetime, usegmt=True)
        flags = "HttpOnly; Secure; SameSite=None" if self.app.secure_cookie else "HttpOnly; SameSite=Lax"
        return f"{COOKIE}={self._session_id}; Path=/; Expires={expires}; {flags}"

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
        if cookie and (self.command == "POST" or not self.cookie_on_post_only):
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
        self._send(status, dumps(obj), content_type="application/json", **kwargs)

    def _hook_error(self, status: int, message: str) -> None:
        # 2.2.3: JSON when Accept or Content-Type mentions JSON, else bare text; no cookie.
        wants_json = "application/json" in (self.headers.get("Accept") or "") + (
            self.headers.get("Content-Type") or ""
        )
        if wants_json:
            self._send(status, dumps({"error": message}), content_type="application/json", cookie=False,
                       chunked=True)
        else:
            self._send(status, message.encode(), content_type="text/plain", cookie=False, chunked=True)

    def _csrf_refused(self, rule: str) -> bool:
        """chat-ui's check of form POSTs (JSON is never checked); ``True`` once it has answered 403.

        ``"referer"`` (to v0.8.3): a Referer of this origin, compared with the
        server's own scheme so it works behind TLS too; ``"origin"`` (v0.8.4
        on): an Origin of this host, refused in the same words.
        """
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.command != "POST" or content_type not in FORM_TYPES:
            return False
        if rule == "referer":
            referer = self.headers.get("Referer")
            if not referer:
                self._hook_error(403, "Non-JSON form requests need to have a referer")
                return True
            if origin(referer) != origin(f"{self.app.scheme}://{self.headers.get('Host', '')}"):
                self._hook_error(403, "Invalid referer for POST request")
                return True
            return False
        sent = self.headers.get("Origin")
        if not sent:
            self._hook_error(403, "Non-JSON form requests need to have an origin")
            return True
        if urlsplit(sent).netloc.lower() != (self.headers.get("Host") or "").lower():
            self._hook_error(403, "Invalid referer for POST request")  # sic: the same words
            return True
        return False

    def _route_error(self, status: int, body: Mapping[str, Any]) -> None:
        # SvelteKit's errors: an HTML page for browsers (or no Accept at all), else JSON.
        accept = self.headers.get("Accept")
        if accept is None or "text/html" in accept:
            message = str(body.get("message") or "Internal Error")
            self._svelte_page(status, message, f"<h1>{status}</h1><p>{message}</p>",
                              content_type="text/html; charset=utf-8")
        else:
            self._json(status, body)

    def _svelte_page(self, status: int, title: str, body: str = "", *, content_type: str = "text/html") -> None:
        """A page of the app: ``x-sveltekit-page: true``, and the assets linked relative to the app root,
        in the ``link`` header and the page, as SvelteKit does (from ``/api/models``: ``../_app/immutable``)."""
        path = self._app_path() or "/"
        up = "../" * (path.count("/") - 1)
        assets = (up or "./") + "_app/immutable"
        link = (f'<{assets}/assets/0.css>; rel="preload"; as="style"; nopush, '
                f'<{assets}/entry/start.js>; rel="modulepreload"; nopush')
        page = SVELTE_PAGE.format(assets=assets, title=title, body=body, base=up.rstrip("/") or ".").encode()
        self._send(status, page, content_type=content_type, headers={"link": link, "x-sveltekit-page": "true"})

    def _page_number(self) -> int:
        """The ``?p=`` of a listing (0 when absent or not a number)."""
        values = parse_qs(urlsplit(self.path).query).get("p") or ["0"]
        return int(values[0]) if values[0].isdigit() else 0

    def _outside_app(self) -> None:
        # SvelteKit answers a path outside the app's base path with a bare text 404 (its respond()).
        self._send(404, b"Not found", content_type="text/plain;charset=UTF-8", cookie=False)


    def _write_chunk(self, data: bytes) -> bool:
        """One HTTP chunk; ``False`` if the client has gone."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            return True
        except OSError:
            self.close_connection = True
            return False

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _client_gone(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the client to close the connection; ``True`` if it did."""
        try:
            readable, _, _ = select.select([self.connection], [], [], max(0.0, seconds))
            if not readable:
                return False
            return not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True


class ConversationRoutes(Handler):
    """The conversation routes every family answers alike: delete, stop-generating, rename.

    A family says how its 500 reads (:meth:`_internal`), applies its faults
    (:meth:`_step_fault`), and whether it ignores a stop (:attr:`stop_ignored`).
    """

    stop_ignored = False
    patches_model = False  # PATCH {"model"} switches a conversation's model (v0.9.3 on)

    def _internal(self) -> None:
        raise NotImplementedError

    def _step_fault(self, step: str) -> bool:
        """Answer with the fault of ``step``, if one applies; ``True`` if it did."""
        raise NotImplementedError

    def _answer_fault(self, fault: Fault | None, default_body: Any) -> bool:
        """Wait out the fault's delay, then answer its status; ``True`` if it did."""
        if fault is not None and fault.delay:
            self.app._stopping.wait(fault.delay)
        if fault is None or fault.status is None:
            return False
        body = fault.body if fault.body is not None else default_body
        headers = {}
        retry_after = fault.retry_after or ("1" if fault.status in (429, 503) else None)
        if retry_after:
            headers["retry-after"] = retry_after  # Node sends header names in lower case
        if isinstance(body, str):
            self._send(fault.status, body.encode(), content_type="text/plain", headers=headers)
        else:
            self._json(fault.status, body, headers=headers)
        return True

    def _prompt(self, conversation_id: str, body: bytes) -> None:
        raise NotImplementedError

    def _conversation_write(self, conversation_id: str, rest: list[str], body: bytes) -> bool:
        """Send, delete, rename or stop ``/conversation/{id}``; ``False`` if the request is none of those."""
        route = (self.command, tuple(rest))
        if route == ("POST", ()):
            self._prompt(conversation_id, body)
        elif route == ("DELETE", ()):
            self._delete(conversation_id)
        elif route == ("PATCH", ()):
            self._patch(conversation_id, body)
        elif route == ("POST", ("stop-generating",)):
            self._stop(conversation_id, body)
        else:
            return False
        return True

    def _owned(self, conversation_id: str) -> Conversation | None:
        with self.app._lock:
            found: Conversation | None = self.app._conversations.get(conversation_id)
        return found if found is not None and found.session == self._session_id else None

    def _target(self, conversation_id: str, step: str | None = None) -> Conversation | None:
        """The session's conversation, or ``None`` once a fault or a 404 has been answered."""
        if step is not None and self._step_fault(step):
            return None
        conversation = self._owned(conversation_id)
        if conversation is None:
            self._route_error(404, NOT_FOUND)
        return conversation

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

    def _delete_all(self) -> int:
        """Delete every conversation of the session; how many there were."""
        app = self.app
        with app._lock:
            mine = [c for c in app._conversations.values() if c.session == self._session_id]
            for conversation in mine:
                app._conversations.pop(conversation.id, None)
                conversation.deleted = True
                conversation.wake.set()
        return len(mine)

    def _delete_all_action(self) -> None:
        """``POST /conversations?/delete``, the settings page's form action (0.4-0.9): a 303 to the app,
        or SvelteKit's JSON of it for a request that accepts JSON."""
        if urlsplit(self.path).query != "/delete":
            return self._route_error(404, {"message": "Not found"})
        self._delete_all()
        location = (self.app.base_path or "") + "/"
        if "application/json" in (self.headers.get("Accept") or ""):
            return self._json(200, {"type": "redirect", "status": 303, "location": location})
        return self._send(303, headers={"location": location}, chunked=True)

    def _stop(self, conversation_id: str, body: bytes = b"") -> None:
        conversation = self._target(conversation_id, "stop")
        if conversation is None:
            return None
        if not self.stop_ignored:
            # chat-ui HEAD takes a stop point, {generationId, seenContentLength}; a missing or
            # invalid body is accepted (protocol-eras.md 8.5). The releases before it ignore the body.
            try:
                point = json.loads(body) if body else None
            except ValueError:
                point = None
            if isinstance(point, dict) and isinstance(point.get("generationId"), str) and isinstance(
                    point.get("seenContentLength"), int):
                conversation.stop_point = (point["generationId"], point["seenContentLength"])
            conversation.stopped = True
            conversation.wake.set()
        self._send(200, chunked=True)

    def _patch(self, conversation_id: str, body: bytes) -> None:
        """``PATCH /conversation/{id}``: ``{"title"}`` everywhere; ``{"model"}`` from v0.9.3 (the
        older releases' schema rejects it: 500)."""
        conversation = self._target(conversation_id)
        if conversation is None:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return self._internal()
        title = payload.get("title") if isinstance(payload, dict) else None
        model = payload.get("model") if isinstance(payload, dict) else None
        if title is None and model is None:
            return self._internal()
        if title is not None and (not isinstance(title, str) or not 1 <= len(title) <= 100):
            return self._internal()
        if model is not None and (not self.patches_model or not isinstance(model, str)):
            return self._internal()
        if model is not None and model not in self.app.models:
            return self._json(400, {"message": "Invalid model"})
        if title is not None:
            conversation.title = title
        if model is not None:
            conversation.model = model
        self._send(200, chunked=True)


class BodyWriter:
    """Writes a streamed answer's body: chunked (or close-delimited), split as the fault says.

    A client that went away does not stop the generation (protocol.md 2.5):
    writes then go nowhere and :attr:`connected` is ``False``.
    """

    def __init__(self, handler: Handler, fault: Fault | None) -> None:
        self.handler = handler
        self.fault = fault or Fault()
        self.connected = True

    def _write(self, data: bytes) -> None:
        size = self.fault.chunk_size
        for piece in [data[i : i + size] for i in range(0, len(data), size)] if size else [data]:
            if not self.connected:
                return
            try:
                if self.fault.close_delimited:
                    self.handler.wfile.write(piece)
                else:
                    self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                self.connected = False
                self.handler.close_connection = True
