"""Every error the SDK raises.

One root, :class:`H2oError`; each subclass names what went wrong, not the
operation that was running::

    H2oError
    ├── SessionCookieError           the server's session cookie can never be sent back
    ├── UnsupportedError             the server's protocol family cannot do what was asked
    ├── APIConnectionError           no usable answer: refused, reset, DNS, proxy, TLS
    │   └── APITimeoutError          connect or idle read timeout (also a TimeoutError)
    ├── APIStatusError               the server answered with an error status
    │   ├── BadRequestError          400
    │   ├── AuthenticationError      401
    │   ├── PermissionDeniedError    403
    │   ├── NotFoundError            404
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError           429 (``retry_after``)
    │   └── InternalServerError      >= 500
    └── StreamError                  the reply stream went wrong after it started
        ├── GenerationError          an in-band error (TGI ``{"error"}``, chat-ui ``status: error``)
        ├── IncompleteStreamError    the stream ended before its last event
        └── ProtocolError            an event that cannot be understood, or too large

Misuse detected before any request (bad messages, bad options) raises the
builtin ``ValueError`` or ``TypeError`` instead, never an ``H2oError``.

Every exception keeps its evidence as attributes and survives ``pickle``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "GenerationError",
    "H2oError",
    "Headers",
    "IncompleteStreamError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "SessionCookieError",
    "StreamError",
    "UnprocessableEntityError",
    "UnsupportedError",
    "status_error",
]

_MAX_MESSAGE = 500


class H2oError(Exception):
    """The root of every error the SDK raises.

    Attributes:
        message: A human-readable description, also ``str(error)``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the attributes rather than ``args`` so subclasses with
        # keyword-only evidence pickle without custom code each.
        return (_rebuild, (type(self), self.__dict__.copy()))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[H2oError], state: dict[str, Any]) -> H2oError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class SessionCookieError(H2oError):
    """The server set its session cookie in a way the client can never return.

    chat-ui production builds mark the ``hf-chat`` cookie ``Secure``; over plain
    ``http://`` it is never sent back, so every later request would be a new
    anonymous session answered with 405 (protocol.md 2.1).
    """


class UnsupportedError(H2oError):
    """The server's protocol family cannot do what was asked.

    Generation parameters exist only in the ``"0.4"`` family (from chat-ui
    0.7 on the server's model configuration decides them), and only some
    families list their models. Raised before any request that would act.
    """


class APIConnectionError(H2oError):
    """The request got no usable answer (refused, reset, DNS, proxy or TLS failure).

    Attributes:
        method: The HTTP method of the failed request, when known.
        url: The URL of the failed request, when known (never with credentials).
        connect: ``True`` when no connection could be opened, so the request
            cannot have reached the server; ``False`` when it may have (the
            connection broke or went silent after the request was written).
    """

    def __init__(
        self, message: str, *, method: str | None = None, url: str | None = None, connect: bool = False
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.connect = connect


class APITimeoutError(APIConnectionError, TimeoutError):
    """The connect timeout or the idle (between bytes) read timeout expired.

    ``connect`` is ``True`` when no connection could be opened in time (nothing
    was sent), ``False`` when the server went silent.
    """


class APIStatusError(H2oError):
    """The server answered with an error status.

    ``str(error)`` holds the server's own message, followed by the status and
    the request it answered.

    Attributes:
        status_code: The HTTP status.
        body: The answer's body: parsed JSON when it was JSON, else its text.
        headers: The answer's headers, as :class:`Headers` (names match in
            any case; ``Set-Cookie`` is left out, since it holds the session).
        method: The HTTP method of the request.
        url: The URL of the request.
        error_type: TGI's ``error_type`` (``validation``, ``overloaded`` ...)
            when the body carried one, else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str = "",
        url: str = "",
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.headers = Headers(headers or {})
        self.method = method
        self.url = url
        self.error_type = error_type


class BadRequestError(APIStatusError):
    """HTTP 400."""


class AuthenticationError(APIStatusError):
    """HTTP 401."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403 (chat-ui: a form POST without a same-origin ``Referer``)."""


class NotFoundError(APIStatusError):
    """HTTP 404 (chat-ui: the conversation is missing or owned by another session)."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422 (TGI rejected the request's parameters before streaming)."""


class RateLimitError(APIStatusError):
    """HTTP 429.

    Attributes:
        retry_after: Seconds the server asked to wait (``Retry-After``), or ``None``.
    """

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


class InternalServerError(APIStatusError):
    """HTTP 500 or above."""


class StreamError(H2oError):
    """The reply stream failed after it started.

    Attributes:
        text: The reply's text received before the failure (may be ``""``).
        conversation_id: The server conversation the reply belonged to, if known.
    """

    def __init__(self, message: str, *, text: str = "", conversation_id: str | None = None) -> None:
        super().__init__(message)
        self.text = text
        self.conversation_id = conversation_id


class GenerationError(StreamError):
    """The server reported in the stream that generation failed.

    A TGI ``{"error", "error_type"}`` event (``"0.4"``, protocol.md 3.3), or a
    chat-ui ``{"type": "status", "status": "error"}`` update (``"0.7"`` on),
    even when the server sends a ``finalAnswer`` after it.

    Attributes:
        error_type: TGI's ``error_type``: ``validation``, ``overloaded``,
            ``generation`` or ``incomplete_generation`` (``None`` if absent).
        status_code: The upstream's HTTP status, when chat-ui passed it on
            (``statusCode``, v0.10+; 402 means the account's credits ran out).
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        status_code: int | None = None,
        text: str = "",
        conversation_id: str | None = None,
    ) -> None:
        super().__init__(message, text=text, conversation_id=conversation_id)
        self.error_type = error_type
        self.status_code = status_code


class IncompleteStreamError(StreamError):
    """The stream ended, or was cut, before the event carrying ``generated_text``."""


class ProtocolError(StreamError):
    """An answer the client cannot understand: an event or line that is not
    valid, one larger than the size bound, or a body of the wrong kind."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


class Headers(Mapping[str, str]):
    """Response headers whose names match in any case, as HTTP defines them.

    chat-ui (Node) and TGI send every header name in lower case, so
    ``headers["Retry-After"]`` must find ``retry-after``. ``Set-Cookie`` is
    dropped: an exception is logged and shown, and the session cookie is a
    credential. Iterating gives the names as the server sent them.
    """

    _DROPPED = frozenset({"set-cookie"})

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._store = {
            name.lower(): (name, value) for name, value in pairs if name.lower() not in self._DROPPED
        }

    def __getitem__(self, name: str) -> str:
        return self._store[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._store

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.lower_items()) == {str(k).lower(): v for k, v in other.items()}

    __hash__ = None  # type: ignore[assignment]

    def lower_items(self) -> Iterator[tuple[str, str]]:
        """``(lower-case name, value)`` pairs."""
        return ((key, value) for key, (_, value) in self._store.items())

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date).

    The one parse of that header; look it up through :class:`Headers` (or any
    case-insensitive mapping), never with one spelling of the name.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _server_message(body: Any) -> tuple[str | None, str | None]:
    """The server's own message and TGI ``error_type`` from an error body."""
    if isinstance(body, Mapping):
        error_type = body.get("error_type")
        error_type = error_type if isinstance(error_type, str) else None
        for key in ("error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value, error_type
            # SvelteKit action errors: {"type": "error", "error": {"message": ...}}
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return str(value["message"]), error_type
        return None, error_type
    if isinstance(body, str) and body.strip():
        title = _TITLE.search(body)
        text = title.group(1) if title else body
        return " ".join(text.split())[:_MAX_MESSAGE], None
    return None, None


def decode_body(content: bytes, content_type: str) -> Any:
    """An error answer's body: parsed JSON when it parses, else text."""
    text = content.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    return text


def status_error(
    status_code: int,
    *,
    reason: str = "",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    method: str = "",
    url: str = "",
) -> APIStatusError:
    """Build the :class:`APIStatusError` subclass for an error answer.

    Args:
        status_code: The HTTP status.
        reason: The status line's reason phrase, used when the body has no message.
        body: The decoded body (see :func:`decode_body`).
        headers: The answer's headers.
        method: The request's method.
        url: The request's URL.

    Returns:
        The exception to raise; its ``str()`` starts with the server's message.
    """
    server_message, error_type = _server_message(body)
    what = f"HTTP {status_code}{' ' + reason if reason else ''} from {method} {url}".rstrip()
    message = f"{server_message} ({what})" if server_message else what
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(
        message,
        status_code=status_code,
        body=body,
        headers=headers,
        method=method,
        url=url,
        error_type=error_type,
    )
