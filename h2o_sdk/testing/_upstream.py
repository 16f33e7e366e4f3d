"""The local server's calls to a real model server, as each chat-ui release makes them (issue 20).

Two kinds of model server, as chat-ui knows them:

- ``"tgi"``: text-generation-inference. chat-ui 0.7-0.9 post to the endpoint URL
  itself, as ``@huggingface/inference``'s ``textGenerationStream`` does, with
  ``{"parameters": {..., "stop_sequences": [...], "return_full_text": false},
  "inputs": <prompt>, "stream": true, "options": {"use_cache": false}}``
  (v0.9.4 drops ``options``), and read TGI's server-sent token events.
- ``"openai"``: an OpenAI-compatible server. chat-ui 0.10 posts
  ``{"model", "messages", "stream": true}`` to ``{url}/chat/completions`` with
  ``authorization: Bearer <key>`` and ``chatui-conversation-id``, reads
  ``chat.completion.chunk`` events up to ``data: [DONE]``, and lists models with
  ``GET {url}/models``.

(0.4's forwarding, which passes TGI's bytes through untouched, lives in ``_v04``.)

A :class:`Call` is one streaming request, read on a thread of its own into a
queue, so the stream writer can wait for the next piece with a timeout (to
write keepAlive lines while the model is silent, and to notice a stop) and can
cut the request at once (:meth:`Call.close`). Every wait is bounded: an
upstream that is down, silent or talking nonsense ends in an :class:`Event`
the writer reports in band, never in a hang. Written with ``http.client``
only: the emulator imports nothing of the client (``style.md``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["APIS", "Call", "Event", "list_models", "openai_request", "tgi_request"]

#: The model server kinds ``serve(upstream_api=...)`` takes.
APIS = ("tgi", "openai")

_MAX_ERROR = 64 * 1024
_MAX_LINE = 1024 * 1024


@dataclass(frozen=True)
class Event:
    """What the model server did next.

    Attributes:
        kind: ``"token"`` (``text``), ``"end"`` (the reply is complete),
            ``"error"`` (an HTTP error status, or an error event mid-stream:
            ``text`` is the server's message, ``status`` its HTTP status when it
            answered with one), ``"died"`` (the connection broke or went silent
            mid-reply), ``"down"`` (no connection could be made).
    """

    kind: str
    text: str = ""
    status: int | None = None


@dataclass(frozen=True)
class Request:
    """One request to the model server: where, and what."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    api: str


def tgi_request(url: str, prompt: str, *, options: bool, key: str | None,
                parameters: Mapping[str, Any] | None = None) -> Request:
    """What chat-ui 0.7-0.9 post to a TGI endpoint (``textGenerationStream``; tests/data/upstream)."""
    params = dict(parameters or {})
    params["stop_sequences"] = list(params.get("stop") or [])
    params["return_full_text"] = False
    body: dict[str, Any] = {"parameters": params, "inputs": prompt, "stream": True}
    if options:
        body["options"] = {"use_cache": False}
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return Request(url, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), headers, "tgi")


def openai_request(url: str, model: str, messages: Sequence[Mapping[str, str]], *, key: str | None,
                   conversation_id: str, retry: int = 0) -> Request:
    """What chat-ui 0.10 posts to ``{url}/chat/completions`` (the OpenAI SDK; tests/data/upstream)."""
    body = {"model": model, "messages": [dict(m) for m in messages], "stream": True}
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {key if key is not None else 'sk-'}",
        "chatui-conversation-id": conversation_id,
        "x-stainless-retry-count": str(retry),
    }
    return Request(url.rstrip("/") + "/chat/completions", json.dumps(body, indent=2).encode(), headers, "openai")


def list_models(url: str, key: str | None, timeout: float = 5.0) -> list[str]:
    """``GET {url}/models``: the model ids of an OpenAI-compatible server (what 0.10 serves).

    Raises:
        OSError, ValueError: The server could not be reached, or answered no list.
    """
    target = urlsplit(url.rstrip("/") + "/models")
    connection = _connection(target.scheme, target.hostname or "127.0.0.1", target.port, timeout)
    try:
        headers = {"Accept": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        connection.request("GET", target.path, headers=headers)
        response = connection.getresponse()
        document = json.loads(response.read(_MAX_LINE))
        if response.status != 200 or not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise ValueError(f"GET {target.path} answered {response.status}")
        return [m["id"] for m in document["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    finally:
        connection.close()


class Call:
    """One streaming request to the model server, read on a thread of its own.

    Args:
        request: What to send.
        connect_timeout: Seconds to open the connection.
        read_timeout: Seconds of silence after which the model server counts as gone.
    """

    def __init__(self, request: Request, *, connect_timeout: float = 10.0, read_timeout: float = 60.0) -> None:
        self._request = request
        self._events: queue.Queue[Event] = queue.Queue()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._thread = threading.Thread(target=self._run, name="h2o-chat-upstream", daemon=True)
        self._thread.start()

    def next(self, timeout: float) -> Event | None:
        """The next event, or ``None`` if the model server said nothing within ``timeout`` seconds."""
        try:
            return self._events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        """Cut the request (a stop, a client gone): the model server sees its connection closed."""
        with self._lock:
            self._closed = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    # -- the reading thread ---------------------------------------------------------------

    def _run(self) -> None:
        request = self._request
        target = urlsplit(request.url)
        connection = _connection(target.scheme, target.hostname or "127.0.0.1", target.port, self._connect_timeout)
        try:
            try:
                connection.connect()
            except OSError:
                self._events.put(Event("down"))
                return
            assert connection.sock is not None
            with self._lock:
                self._sock = connection.sock
                closed = self._closed
            if closed:
                return
            connection.sock.settimeout(self._read_timeout)
            try:
                connection.request("POST", target.path or "/", request.body, dict(request.headers))
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._events.put(Event("died", f"no answer: {exc!r}"))
                return
            if response.status >= 400:
                self._events.put(Event("error", _error_message(response.read(_MAX_ERROR), response.status),
                                       response.status))
                return
            reader = _tgi_events if request.api == "tgi" else _openai_events
            why = "the body ended before the reply did"
            try:
                for event in reader(_data_lines(response)):
                    self._events.put(event)
                    if event.kind != "token":
                        return
            except (OSError, http.client.HTTPException, ValueError) as exc:
                why = f"reading the body: {exc!r}"
            self._events.put(Event("died", why))
        finally:
            connection.close()


def _connection(scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _data_lines(response: http.client.HTTPResponse) -> Iterator[str]:
    """The ``data:`` fields of a server-sent event stream, as text."""
    while True:
        line = response.readline(_MAX_LINE)
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("data:"):
            yield text[5:].lstrip(" ")


def _tgi_events(lines: Iterator[str]) -> Iterator[Event]:
    """TGI's token events: the text of each token that is not special, then the end, or its error."""
    for data in lines:
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError("not a TGI event")
        if "error" in event:
            yield Event("error", str(event["error"]))
            return
        token = event.get("token")
        if isinstance(token, dict) and not token.get("special") and isinstance(token.get("text"), str):
            yield Event("token", token["text"])
        if event.get("generated_text") is not None:
            yield Event("end")
            return


def _openai_events(lines: Iterator[str]) -> Iterator[Event]:
    """``chat.completion.chunk`` deltas, up to ``[DONE]`` (or the end of a stream that finished without it)."""
    finished = False
    for data in lines:
        if data.strip() == "[DONE]":
            yield Event("end")
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("not a chat.completion.chunk")
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            yield Event("error", str(message))
            return
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                yield Event("token", content)
            if isinstance(choice, dict) and choice.get("finish_reason"):
                finished = True
    if finished:
        yield Event("end")  # the SDK takes the end of the body as the end


def _error_message(body: bytes, status: int) -> str:
    """The model server's own words for an error status: TGI's ``error``, OpenAI's ``error.message``."""
    try:
        document = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or f"HTTP {status}"
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return f"HTTP {status}"
