"""The blocking :class:`Client`: one ``requests.Session``, timeouts, retries, the lifecycle.

``_send`` is the only place that sees ``requests`` and ``urllib3`` exceptions
and error statuses; everything above it speaks :mod:`h2o_sdk._exceptions`.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.adapters
import requests.cookies
import requests.structures
import requests.utils
import urllib3.exceptions

from . import _protocol
from ._conversation import Conversation, finish
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    SessionCookieError,
    decode_body,
    parse_retry_after,
    status_error,
)
from ._protocol import Messages
from ._resource import Resource
from ._stream import DEFAULT_MAX_EVENT_SIZE, Stream
from ._types import DEFAULT_TIMEOUT, Reply, Timeout
from ._version import __version__

__all__ = ["Client"]

logger = logging.getLogger("h2o_sdk")

_READ_SIZE = 64 * 1024
_MAX_ERROR_BODY = 64 * 1024
_MAX_DRAIN = 64 * 1024
_RETRY_STATUSES = frozenset({408, 429})
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_MAX_RETRY_AFTER = 60.0
_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
_JSON_ACCEPT = {"Accept": "application/json"}
_STREAM_ACCEPT = {"Accept": "text/event-stream, application/json"}

# Indirection so tests can observe backoff without waiting.
_sleep = time.sleep


class Client(Resource):
    """A blocking client for an h2oGPT (chat-ui + TGI) chat service.

    Example::

        with h2o_sdk.Client() as client:
            for text in client.stream("Hi"):
                print(text, end="", flush=True)

    One ``requests.Session`` per client keeps the session cookie; the welcome
    modal is accepted once, before the first conversation. Every conversation
    the client creates is deleted again on every exit path.

    Thread contract: a client may be shared by threads; each :class:`Stream`
    belongs to one thread at a time.

    Args:
        base_url: The service's root URL.
        model: The model id used when a call names none.
        proxy: A proxy URL for every request (``http://``, ``https://``, or
            ``socks5://`` with the ``socks`` extra installed).
        timeout: A :class:`Timeout`, a number of seconds for both the connect
            and the idle read timeout, or a ``(connect, read)`` pair.
        max_retries: How often a failed request may be retried (0 disables).
        session: A ``requests.Session`` to use instead of a new one; the
            client does not close it.
        headers: Extra headers sent with every request.
        verify: TLS verification, as ``requests`` takes it (bool or CA path).
        max_event_size: The largest stream event accepted, in bytes.
        max_connections: How many connections the client's own session keeps
            open for reuse (raise it for many concurrent streams; ignored
            with ``session=``).

    Raises:
        TypeError, ValueError: An argument is unusable.
    """

    def __init__(
        self,
        base_url: str = _protocol.DEFAULT_BASE_URL,
        *,
        model: str = _protocol.DEFAULT_MODEL,
        proxy: str | None = None,
        timeout: Timeout | float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        session: requests.Session | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_connections: int = 10,
    ) -> None:
        self.base_url = _check_base_url(base_url)
        self.model = _check_model(model)
        self.timeout = Timeout.coerce(timeout)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, not {max_retries!r}")
        self.max_retries = max_retries
        if isinstance(max_event_size, bool) or not isinstance(max_event_size, int) or max_event_size < 1:
            raise ValueError(f"max_event_size must be a positive whole number, not {max_event_size!r}")
        self.max_event_size = max_event_size
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError(f"session must be a requests.Session, not {type(session).__name__}")
        self._proxies = _check_proxy(proxy)
        self._headers = {"User-Agent": f"h2o-sdk/{__version__} python-requests/{requests.__version__}"}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            self._headers.update(headers)
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive whole number, not {max_connections!r}")
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=max_connections)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # requests reads the environment (proxies, NO_PROXY, CA bundle, .netrc)
            # again on every request, which costs more than the request itself
            # here; read it once, for the one base URL this client talks to.
            found = session.merge_environment_settings(self.base_url, {}, None, verify, None)
            if self._proxies is None and found["proxies"]:
                self._proxies = dict(found["proxies"])
            verify = found["verify"] if found["verify"] is not None else verify
            session.auth = requests.utils.get_netrc_auth(self.base_url)
            session.trust_env = False
        self._session = session
        self._verify = verify
        # What Session.prepare_request would merge on every request, merged and
        # checked once. Checked for any session; kept only for a session this
        # client made, whose settings nobody else changes.
        prepared_base = _prepared_base(self.base_url, {**session.headers, **self._headers, **_JSON_ACCEPT})
        self._prepared_base = prepared_base if self._owns_session else None
        self._settings_lock = threading.Lock()
        self._settings_accepted = False
        self._closed = False

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
            **parameters: Generation parameters (``temperature``, ``stop``,
                ``seed``, ``details`` ...), merged over the seed's defaults.

        Returns:
            A :class:`Stream`; nothing is sent until it is iterated.

        Raises:
            TypeError, ValueError: Bad messages, model or parameters, before any request.
        """
        payload = _protocol.prompt_payload(_protocol.format_prompt(messages), parameters)
        model = _check_model(model) if model is not None else self.model
        if self._closed:
            raise ValueError("this Client is closed")
        return Stream(
            lambda: self._open_exchange(model, payload),
            max_event_size=self.max_event_size,
            keep_tokens=keep_tokens,
        )

    def conversation(self, *, model: str | None = None, keep: bool = False, **parameters: Any) -> Conversation:
        """Start a multi-turn conversation kept on the server.

        Args:
            model: The model id; the client's ``model`` when omitted.
            keep: Leave the server conversation in place when it is closed.
            **parameters: Generation parameters for every turn.

        Returns:
            A :class:`Conversation` (a context manager); nothing is sent
            before its first turn.
        """
        if self._closed:
            raise ValueError("this Client is closed")
        model = _check_model(model) if model is not None else self.model
        return Conversation(self, model=model, keep=keep, parameters=parameters)

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
        """Close the connections of the session the client made (idempotent)."""
        self._closed = True
        if self._owns_session:
            self._session.close()


    def __repr__(self) -> str:
        return f"<Client {self.base_url} model={self.model!r}>"

    # -- the lifecycle ----------------------------------------------------

    def _open_exchange(self, model: str, payload: Mapping[str, Any]) -> _ChatExchange:
        """A one-shot prompt: a new conversation, deleted when the reply ends."""
        return self._send_prompt(self._create_conversation(model), payload, delete=True)

    def _create_conversation(self, model: str) -> str:
        self._accept_settings()
        response = self._request("POST", _protocol.CONVERSATION_PATH, json_body=_protocol.create_payload(model))
        return _protocol.parse_conversation_id(_json_or_none(response))

    def _send_prompt(self, conversation_id: str, payload: Mapping[str, Any], *, delete: bool) -> _ChatExchange:
        """POST a prompt; on failure clean up (and delete, if ``delete``) before raising."""
        try:
            response = self._request(
                "POST",
                _protocol.conversation_path(conversation_id),
                json_body=payload,
                headers=_STREAM_ACCEPT,
                stream=True,
                idempotent=False,
            )
        except BaseException as exc:
            # An error status means the server answered and generates nothing.
            self._cleanup(conversation_id, stop=not isinstance(exc, APIStatusError), delete=delete)
            raise
        return _ChatExchange(self, conversation_id, response, delete=delete)

    def _accept_settings(self, *, again: bool = False) -> None:
        """Accept the welcome modal once per session (protocol.md 1, 2.3)."""
        with self._settings_lock:
            if self._settings_accepted and not again:
                return
            response = self._request(
                "POST",
                _protocol.SETTINGS_PATH,
                form=_protocol.settings_form(self.model),
                headers={"Referer": self.base_url + "/"},
                allow_redirects=False,
                reaccept=False,
            )
            body = _json_or_none(response)
            if isinstance(body, Mapping) and body.get("type") in ("error", "failure"):
                status = body.get("status")
                raise status_error(
                    status if isinstance(status, int) and status >= 400 else 500,
                    body=body,
                    headers=response.headers,
                    method="POST",
                    url=response.url,
                )
            self._check_cookies(response)
            self._settings_accepted = True

    def _check_cookies(self, response: requests.Response) -> None:
        if urlsplit(self.base_url).scheme != "http":
            return
        secure = sorted({cookie.name for cookie in response.cookies if cookie.secure})
        if secure:
            raise SessionCookieError(
                f"{self.base_url} set its session cookie ({', '.join(secure)}) with the Secure flag, "
                "so it is never sent back over plain http:// and every later request would be a new "
                "session. Use the https:// URL of the service (or run chat-ui in dev mode)."
            )

    def _cleanup(self, conversation_id: str, *, stop: bool, delete: bool = True) -> None:
        """Stop generation and delete the conversation, as asked; log, never raise."""
        steps = [("stop generating in", _protocol.stop_generating_path(conversation_id), "POST")] if stop else []
        if delete:
            steps.append(("delete", _protocol.conversation_path(conversation_id), "DELETE"))
        for what, path, method in steps:
            try:
                response = self._request(method, path, deadline=time.monotonic() + self.timeout.cleanup)
                response.close()
            except Exception as exc:  # cleanup must not replace what is propagating
                logger.warning("could not %s conversation %s: %s", what, conversation_id, exc)

    # -- the one HTTP boundary ---------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        reaccept: bool = True,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries, re-accepting the welcome modal once on 405.

        ``idempotent=False`` (the prompt) retries only failures where no byte
        of the answer can have arrived: no connection, or one closed before
        the status line. A read timeout is not retried there, because the
        server may be generating already.
        """
        attempt = 0
        while True:
            timeout = self.timeout.connect, self.timeout.read
            if deadline is not None:
                left = deadline - time.monotonic()
                timeout = min(timeout[0], max(left, 0.01)), min(timeout[1], max(left, 0.01))
            try:
                return self._send(method, path, timeout=timeout, **kwargs)
            except APIStatusError as exc:
                if exc.status_code == 405 and reaccept:
                    logger.info("%s %s answered 405; accepting the welcome modal again", method, path)
                    reaccept = False
                    self._accept_settings(again=True)
                    continue
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
                if not (exc.status_code in _RETRY_STATUSES or exc.status_code >= 500) or not idempotent:
                    raise
                error: Exception = exc
            except APITimeoutError as exc:
                if not idempotent and not exc.connect:
                    raise
                error, retry_after = exc, None
            except APIConnectionError as exc:
                error, retry_after = exc, None
            if attempt >= self.max_retries:
                raise error
            delay = _backoff(attempt, retry_after)
            if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
                raise error
            attempt += 1
            logger.info("%s %s failed (%s); retry %d in %.2fs", method, path, error, attempt, delay)
            _sleep(delay)

    def _send(
        self,
        method: str,
        path: str,
        *,
        timeout: tuple[float, float],
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        url = self.base_url + path
        try:
            if self._prepared_base is not None:
                response = self._session.send(
                    self._prepare(method, path, headers, json_body, form),
                    stream=stream,
                    timeout=timeout,
                    verify=self._verify,
                    proxies=self._proxies or {},
                    allow_redirects=allow_redirects,
                )
            else:
                response = self._session.request(
                    method,
                    url,
                    headers={**self._headers, **_JSON_ACCEPT, **(headers or {})},
                    json=json_body,
                    data=form,
                    proxies=self._proxies,
                    verify=self._verify,
                    stream=stream,
                    timeout=timeout,
                    allow_redirects=allow_redirects,
                )
        except requests.exceptions.ConnectTimeout as exc:
            raise _timeout_error(f"timed out connecting to {url}", method, url, connect=True) from exc
        except requests.exceptions.Timeout as exc:
            raise _timeout_error(f"timed out waiting for {method} {url}", method, url, connect=False) from exc
        except requests.exceptions.RequestException as exc:
            raise APIConnectionError(f"{method} {url} failed: {_reason(exc)}", method=method, url=url) from exc
        logger.debug("%s %s -> %s", method, path, response.status_code)
        if response.status_code < 400:
            return response
        try:
            content = response.raw.read(_MAX_ERROR_BODY, decode_content=True) if stream else response.content
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

    def _prepare(
        self, method: str, path: str, headers: Mapping[str, str] | None, json_body: Any, form: Mapping[str, str] | None
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
        # Session.send follows redirects with this jar (a merged copy in requests).
        prepared._cookies = requests.cookies.RequestsCookieJar()  # type: ignore[attr-defined]
        cookie = requests.cookies.get_cookie_header(self._session.cookies, prepared)  # type: ignore[no-untyped-call]
        if cookie is not None:
            prepared.headers["Cookie"] = cookie
        content_type = None
        if json_body is not None:
            prepared.body = json.dumps(json_body, allow_nan=False).encode()
            content_type = "application/json"
        elif form is not None:
            prepared.body = urlencode(form)
            content_type = "application/x-www-form-urlencoded"
        prepared.prepare_content_length(prepared.body)
        if content_type is not None:
            prepared.headers["Content-Type"] = content_type
        if self._session.auth is not None:
            prepared.prepare_auth(self._session.auth)
        prepared.prepare_hooks(self._session.hooks)
        return prepared


class _ChatExchange:
    """The prompt's open answer and how to finish it (see ``_stream.Exchange``)."""

    def __init__(self, client: Client, conversation_id: str, response: requests.Response, *, delete: bool) -> None:
        self._client = client
        self.conversation_id = conversation_id
        self._response = response
        self._delete = delete
        self._stopped = False
        self._chunks: Iterator[bytes] | None = None

    def chunks(self) -> Iterator[bytes]:
        if self._chunks is None:
            self._chunks = self._read()
        return self._chunks

    def _read(self) -> Iterator[bytes]:
        raw = self._response.raw
        method, url = "POST", self._response.url
        try:
            if raw.chunked and raw.supports_chunked_reads():
                # One HTTP chunk (one event, in practice) at a time, as it arrives;
                # urllib3's chunk reader costs far less per chunk than read1().
                yield from raw.read_chunked(_READ_SIZE, decode_content=True)
            else:
                # A close-delimited body: read1() returns what has arrived.
                while chunk := raw.read1(_READ_SIZE, decode_content=True):
                    yield chunk
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise _timeout_error(f"no data from {url} for {self._client.timeout.read}s", method, url) from exc
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise APIConnectionError(f"connection broken while reading {url}: {exc}", method=method, url=url) from exc

    def _socket(self) -> socket.socket | None:
        sock = getattr(getattr(self._response.raw, "_connection", None), "sock", None)
        return sock if isinstance(sock, socket.socket) else None

    def abort(self) -> None:
        # Shutting the socket down wakes a recv() blocked in another thread;
        # closing it would not (and could hand its descriptor to a new socket).
        sock = self._socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop_generating(self) -> None:
        self._stopped = True
        self._client._cleanup(self.conversation_id, stop=True, delete=False)
        sock = self._socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(self._client.timeout.cleanup)

    def finish(self, *, completed: bool, stop: bool) -> None:
        response = self._response
        try:
            if completed:
                # Read the (normally empty) rest so the connection can be reused.
                drained = 0
                for chunk in self.chunks():
                    drained += len(chunk)
                    if drained > _MAX_DRAIN:
                        break
        except Exception as exc:
            logger.debug("could not drain the answer from %s: %s", response.url, exc)
        finally:
            response.close()
        self._client._cleanup(self.conversation_id, stop=stop and not self._stopped, delete=self._delete)


def _timeout_error(message: str, method: str, url: str, *, connect: bool = False) -> APITimeoutError:
    return APITimeoutError(message, method=method, url=url, connect=connect)


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
    except ValueError:
        return None


def _check_base_url(base_url: object) -> str:
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a str, not {type(base_url).__name__}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment: {base_url!r}")
    return base_url.rstrip("/")


def _prepared_base(base_url: str, headers: Mapping[str, str | bytes | None]) -> tuple[str, dict[str, str]]:
    """``base_url`` and ``headers`` as requests would send them, checked once.

    Raises:
        ValueError: A header or the URL is not something requests can send.
    """
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(base_url + "/", None)
        # None removes a header, as in requests' own merging.
        prepared.prepare_headers({name: value for name, value in headers.items() if value is not None})
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL) as exc:
        raise ValueError(str(exc)) from exc
    assert prepared.url is not None and prepared.url.endswith("/")
    # http.client sends str header values as latin-1, so bytes ones are the same decoded so
    return prepared.url[:-1], {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in prepared.headers.items()}


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
