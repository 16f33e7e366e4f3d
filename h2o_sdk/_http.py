"""The one HTTP boundary: the ``requests.Session``, TLS, proxies, timeouts, retries, redirects.

:class:`Http` knows nothing of chat-ui: it sends a method to a path under one
base URL and answers a :class:`Response` (or, streaming, a :class:`StreamBody`).
It is the only module that imports ``requests`` and ``urllib3``; every
exception of theirs, and every error status, leaves it as an
:mod:`h2o_sdk._exceptions` error (habit 2 in ``style.md``).

Cancellation: an :class:`Abort` handle made active in a thread receives the
socket of every request of that thread (the client's own connection classes
register it), so :meth:`Abort.abort` from another thread can shut it down and
interrupt backoff sleeps.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import importlib.util
import ipaddress
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import requests
import requests.adapters
import requests.cookies
import requests.structures
import requests.utils
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.ssl_

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    decode_body,
    parse_retry_after,
    status_error,
)
from ._types import Timeout
from ._version import __version__

__all__ = ["Abort", "Http", "Response", "Session", "StreamBody", "check_base_url", "is_loopback", "without_userinfo"]

#: What ``Client(session=...)`` takes: a ``requests.Session`` (named here, so no other module imports requests).
Session = requests.Session

logger = logging.getLogger("h2o_sdk")

_READ_SIZE = 64 * 1024
MAX_ERROR_BODY = 64 * 1024
_MAX_DRAIN = 64 * 1024
# Statuses that say the server did nothing: retried for every request.
_NOTHING_DONE = frozenset({408, 429, 503})
_MAX_REDIRECTS = 5
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_MAX_RETRY_AFTER = 60.0
_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
_JSON_ACCEPT = {"Accept": "application/json"}
LOOPBACK = ("localhost", "127.0.0.1", "::1")
_LOGIN_PAGE = re.compile(r"login|oauth|authorize|signin", re.IGNORECASE)
# The repr urllib3 puts before a connection error's reason ("HTTPConnection(host=..., port=...): ...").
_CONNECTION_REPR = re.compile(r"^_?HTTPS?Connection\(host=[^)]*\): ")


# -- cancellation -------------------------------------------------------------------

_current = threading.local()


class Abort:
    """Cuts a turn's blocking steps short, from any thread.

    The client's connections :meth:`attach` their socket while a request of
    this turn runs in the thread where the handle is :meth:`active`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._sock: socket.socket | None = None
        self._cuttable = True
        self.attached = threading.Event()  # a request of this turn has taken its connection

    @property
    def aborted(self) -> bool:
        return self._event.is_set()

    def abort(self) -> bool:
        """Cut the turn short (thread-safe, idempotent, never raises).

        Returns:
            ``False`` while a request must finish on its own (the create), else ``True``.
        """
        self._event.set()
        with self._lock:
            sock, cuttable = self._sock, self._cuttable
        if sock is not None and cuttable:
            _shut(sock)
        return cuttable

    def attach(self, sock: socket.socket) -> None:
        """The socket a request of this turn is using (shut at once if already aborted)."""
        with self._lock:
            self._sock = sock
            cut = self._cuttable and self._event.is_set()
        self.attached.set()
        if cut:
            _shut(sock)

    def detach(self) -> None:
        """Forget the socket: it goes back to the pool, maybe to another turn."""
        with self._lock:
            self._sock = None

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless aborted first; ``True`` if the wait ran out."""
        return not self._event.wait(seconds)

    @contextlib.contextmanager
    def active(self, *, keep: bool = False) -> Iterator[None]:
        """Requests made in this thread meanwhile attach their sockets here.

        Args:
            keep: Keep the socket attached afterwards (a streaming answer still reads it).
        """
        previous = getattr(_current, "abort", None)
        _current.abort = self
        try:
            yield
        finally:
            _current.abort = previous
            if not keep:
                self.detach()

    @contextlib.contextmanager
    def uncuttable(self) -> Iterator[None]:
        """Meanwhile :meth:`abort` only marks the turn; the request in flight finishes."""
        with self._lock:
            self._cuttable = False
        try:
            yield
        finally:
            with self._lock:
                self._cuttable = True


def _attach_current(sock: socket.socket) -> None:
    """Called by the client's connections: register ``sock`` with this thread's turn, if any."""
    abort: Abort | None = getattr(_current, "abort", None)
    if abort is not None:
        abort.attach(sock)


def _shut(sock: socket.socket) -> None:
    # Shutting a socket down wakes a recv() blocked in another thread; closing
    # it would not (and could hand its descriptor to a new socket).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _sleep(seconds: float, abort: Abort | None = None) -> bool:
    """Wait before a retry; ``False`` if ``abort`` cut the wait short. Tests replace it."""
    if abort is None:
        time.sleep(seconds)
        return True
    return abort.sleep(seconds)


# -- what a request answers ---------------------------------------------------------


class Response:
    """A whole answer with a status below 400 (or a redirect not followed).

    Attributes:
        status_code, headers, content, url: As received.
        secure_cookies: The names of the cookies it set with the ``Secure`` flag.
    """

    __slots__ = ("_cookies", "content", "headers", "is_redirect", "status_code", "url")

    def __init__(self, response: requests.Response) -> None:
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self.content = response.content
        self.url = response.url
        self.is_redirect = response.is_redirect
        self._cookies = response.cookies

    @property
    def secure_cookies(self) -> list[str]:
        # Only the welcome modal's answer is asked: not worth a pass over the jar for every request.
        return sorted({cookie.name for cookie in self._cookies if cookie.secure})

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON, or ``None`` if it is not JSON."""
        try:
            return json.loads(self.content)
        except (ValueError, RecursionError):
            return None


class StreamBody:
    """A streaming answer with a 2xx status (``_lifecycle.Body``): its bytes, as they arrive."""

    def __init__(self, response: requests.Response, read_timeout: float) -> None:
        self._response = response
        self._read_timeout = read_timeout
        self._deadline: float | None = None
        self._chunks: Iterator[bytes] | None = None
        self.headers: Mapping[str, str] = response.headers

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    @property
    def sock(self) -> socket.socket | None:
        sock = getattr(getattr(self._response.raw, "_connection", None), "sock", None)
        return sock if isinstance(sock, socket.socket) else None

    def read_text(self, limit: int = MAX_ERROR_BODY) -> str:
        """Read at most ``limit`` bytes as text and close (an answer that is no stream)."""
        try:
            return self._response.raw.read(limit, decode_content=True).decode("utf-8", "replace")
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
            return ""
        finally:
            self._response.close()

    def chunks(self) -> Iterator[bytes]:
        if self._chunks is None:
            self._chunks = self._read()
        return self._chunks

    def set_deadline(self, deadline: float) -> None:
        self._deadline = deadline

    def _read(self) -> Iterator[bytes]:
        raw = self._response.raw
        method, url = "POST", without_userinfo(self._response.url)
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


# -- the boundary ---------------------------------------------------------------------


class Http:
    """Requests to one base URL, with the client's session, TLS context, proxies and retries.

    Args:
        base_url: An http(s) URL (checked with :func:`check_base_url`).
        proxy, timeout, max_retries, session, headers, verify, max_connections:
            As ``Client`` documents them.
        cookies: Cookies sent with every request, unless the server has set
            one of the same name since.

    Raises:
        TypeError, ValueError: An argument is unusable.
    """

    def __init__(
        self,
        base_url: str,
        *,
        proxy: str | None,
        timeout: Timeout,
        max_retries: int,
        session: requests.Session | None,
        headers: Mapping[str, str] | None,
        verify: bool | str | None,
        max_connections: int,
        cookies: Mapping[str, str],
    ) -> None:
        self.base_url, self._auth = check_base_url(base_url)
        self.timeout = timeout
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, not {max_retries!r}")
        self.max_retries = max_retries
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError(f"session must be a requests.Session, not {type(session).__name__}")
        if verify is not None and not isinstance(verify, (bool, str)):
            raise TypeError(f"verify must be a bool or a CA bundle path, not {type(verify).__name__}")
        self._cookies = dict(cookies)
        self._proxies = _check_proxy(proxy)
        self._headers = {"User-Agent": f"h2o-sdk/{__version__} python-requests/{requests.__version__}"}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            self._headers.update(headers)
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive whole number, not {max_connections!r}")
        self.owns_session = session is None
        if session is None:
            session = requests.Session()
            # requests reads the environment (proxies, NO_PROXY, CA bundle, .netrc)
            # again on every request, which costs more than the request itself
            # here; read it once, for the one base URL this client talks to.
            found = session.merge_environment_settings(self.base_url, {}, None, verify, None)
            # Loopback never goes through $HTTP(S)_PROXY (the local server, a model on this
            # machine): only through a proxy the caller names (issue 18.3).
            if self._proxies is None and found["proxies"] and not is_loopback(urlsplit(self.base_url).hostname):
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
        self._prepared_base = prepared_base if self.owns_session else None
        self.rtt: float | None = None  # a smoothed round trip of short requests, in seconds

    @property
    def sends_secure_cookies_back(self) -> bool:
        """Whether a ``Secure`` cookie the server sets is sent back (https, or this client's jar on loopback)."""
        parts = urlsplit(self.base_url)
        return parts.scheme != "http" or (parts.hostname in LOOPBACK and self.owns_session)

    def close(self) -> None:
        """Close the connections of a session this object made (idempotent)."""
        if self.owns_session:
            self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        follow: bool = True,
        deadline: float | None = None,
        abort: Abort | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Response:
        """Send ``method path`` and read the whole answer.

        Args:
            idempotent: Retry any connection failure and 408/429/5xx. When
                ``False`` (create, prompt) only what cannot have reached the
                server is retried: a failed connect, and 408/429/503, which say
                nothing was done. Never a request written whose answer was
                lost: the server may have acted on it (11.6, 11.7).
            follow: Follow 307/308 redirects within the base URL (never
                elsewhere); ``False`` returns a redirect as it is.
            deadline: Nothing may wait past this ``time.monotonic()`` value.
            abort: The turn's handle: its sockets are cut and its backoff
                sleeps interrupted by :meth:`Abort.abort`.
            headers, json_body, form, data: What to send (``data`` with its
                ``Content-Type`` in ``headers``).

        Raises:
            APIStatusError: An error status, with the server's message.
            APIConnectionError: No usable answer (``APITimeoutError`` for a timeout).
        """
        response = self._retrying(method, path, idempotent=idempotent, follow=follow, deadline=deadline, abort=abort,
                                  stream=False, headers=headers, json_body=json_body, form=form, data=data)
        return Response(response)

    def stream(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        follow: bool = True,
        deadline: float | None = None,
        abort: Abort | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
    ) -> StreamBody:
        """Send ``method path`` and return once the status line said 2xx; the body is read as it arrives.

        A redirect that is not followed is refused (a prompt is never re-posted).
        Takes the arguments of :meth:`request`; the abort handle keeps the socket.
        """
        response = self._retrying(method, path, idempotent=idempotent, follow=follow, deadline=deadline, abort=abort,
                                  stream=True, headers=headers, json_body=json_body, form=None, data=data)
        return StreamBody(response, self.timeout.read)

    def read(
        self, path: str, limit: int, *, headers: Mapping[str, str] | None = None, abort: Abort | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """GET ``path`` and read at most ``limit + 1`` bytes of it (the caller tells a larger body by its length).

        Raises:
            APIStatusError, APIConnectionError: As :meth:`request`.
        """
        response = self._retrying("GET", path, idempotent=True, follow=True, deadline=deadline, abort=abort,
                                  stream=True, headers=headers, json_body=None, form=None, data=None)
        try:
            return bytes(response.raw.read(limit + 1, decode_content=True))
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise APIConnectionError(f"connection broken while reading {path}: {exc}", method="GET",
                                     url=self.base_url + path) from exc
        finally:
            response.close()

    def _retrying(
        self, method: str, path: str, *, idempotent: bool, follow: bool, deadline: float | None,
        abort: Abort | None, stream: bool, **body: Any,
    ) -> requests.Response:
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
                    response = self._send(method, path, timeout=timeout, stream=stream, **body)
                else:
                    with abort.active(keep=stream):
                        response = self._send(method, path, timeout=timeout, stream=stream, **body)
                if not stream:
                    elapsed = time.monotonic() - sent
                    self.rtt = elapsed if self.rtt is None else 0.7 * self.rtt + 0.3 * elapsed
                if not response.is_redirect or not follow:
                    if response.is_redirect and stream:
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
        location = without_userinfo(urljoin(self.base_url + path, response.headers.get("Location", "")))
        response.close()
        if method == "POST" and response.status_code in (302, 303) and _LOGIN_PAGE.search(urlsplit(location).path):
            # A write sent to an identity provider: a login is needed (chat-ui 0.10, protocol-eras.md 8.1).
            return AuthenticationError(
                f"the server redirected {method} {path} to a login page ({location.split('?')[0]})",
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
            raise APITimeoutError(f"timed out connecting to {url}{self._unreachable()}", method=method, url=url,
                                  connect=True) from exc
        except requests.exceptions.Timeout as exc:
            raise APITimeoutError(f"timed out waiting for {method} {url}", method=method, url=url) from exc
        except requests.exceptions.RequestException as exc:
            connect = _nothing_sent(exc)
            message = f"{method} {url} failed: {_reason(exc)}"
            if connect and not isinstance(exc, (requests.exceptions.SSLError, requests.exceptions.ProxyError)):
                message += self._unreachable()
            raise APIConnectionError(message, method=method, url=url, connect=connect) from exc
        logger.debug("%s %s -> %s", method, path, response.status_code)
        if response.status_code < 400:
            return response
        try:
            content = response.raw.read(MAX_ERROR_BODY, decode_content=True) if stream else response.content
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
            content = b""
        finally:
            response.close()
        raise status_error(
            response.status_code,
            reason=response.reason or "",
            body=decode_body(content, response.headers.get("Content-Type", "")),
            headers=response.headers,
            method=method,
            url=url,
        )

    def _unreachable(self) -> str:
        return f"; check that the server is running at {self.base_url} and reachable from here"

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


# -- connections a turn can cut, and one TLS context per client --------------------------


class _HTTPConnection(urllib3.connection.HTTPConnection):
    """Registers its socket with the turn running in this thread (:class:`Abort`)."""

    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a reused connection: connect() does not run
            _attach_current(self.sock)
        super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _attach_current(self.sock)
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


class _CookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """Send ``Secure`` cookies to loopback hosts over http, as browsers do (localhost is a secure context)."""

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        host = urlsplit(request.get_full_url()).hostname
        if cookie.secure and host in LOOPBACK:
            return True
        return bool(super().return_ok_secure(cookie, request))


def _nothing_sent(exc: requests.exceptions.RequestException) -> bool:
    """Whether a requests error happened before the request can have reached the server."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError,
                        requests.exceptions.SSLError)):
        return True
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError))


def _reason(exc: BaseException) -> str:
    """The root cause of a requests error, without urllib3's retry wrapping or a connection's repr."""
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None) or inner or exc
    return _CONNECTION_REPR.sub("", str(reason))


def _backoff(attempt: int, retry_after: float | None) -> float | None:
    """Seconds before retry number ``attempt + 1``; ``None``: do not retry."""
    if retry_after is not None:
        return retry_after if retry_after <= _MAX_RETRY_AFTER else None
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * (1 << attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def without_userinfo(url: str) -> str:
    """``url`` without the ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def check_base_url(base_url: object) -> tuple[str, tuple[str, str] | None]:
    """The base URL without credentials, and the credentials it held (for Basic auth).

    Raises:
        TypeError, ValueError: Not an http(s) URL, or one with spaces, a query or a fragment.
    """
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a str, not {type(base_url).__name__}")
    if base_url != base_url.strip() or any(c.isspace() for c in base_url):
        raise ValueError(f"base_url must not contain spaces: {without_userinfo(base_url)!r}")
    parts = urlsplit(base_url)
    shown = without_userinfo(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL, not {shown!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment: {shown!r}")
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = unquote(parts.username or ""), unquote(parts.password or "")
    return without_userinfo(base_url).rstrip("/"), auth


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
