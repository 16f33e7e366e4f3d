"""Test helpers: TGI event bytes and a raw body that returns one chunk per read."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import responses
from responses.registries import OrderedRegistry

BASE = "http://chat.test"
CID = "6b04967da542341dab911206"
MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"


def token_event(tid: int, text: str, *, special: bool = False, final: str | None = None,
                details: dict[str, Any] | None = None, sep: bytes = b"\n") -> bytes:
    """One TGI event exactly as chat-ui forwards it: ``data:`` + compact JSON + blank line."""
    obj = {"token": {"id": tid, "text": text, "logprob": -0.1, "special": special},
           "generated_text": final, "details": details}
    return b"data:" + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + sep + sep


def reply_events(words: Sequence[str], *, details: dict[str, Any] | None = None, sep: bytes = b"\n") -> list[bytes]:
    """The events of a whole reply: one per word, then the special end token."""
    events = [token_event(1000 + i, w, sep=sep) for i, w in enumerate(words)]
    events.append(token_event(11, "<|endoftext|>", special=True, final="".join(words), details=details, sep=sep))
    return events


def error_event(message: str, error_type: str) -> bytes:
    return b"data:" + json.dumps({"error": message, "error_type": error_type}).encode() + b"\n\n"


class _Chunks(io.RawIOBase):
    def __init__(self, chunks: Iterable[bytes | BaseException]) -> None:
        self._chunks = iter(chunks)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return 0
        if isinstance(chunk, BaseException):
            raise chunk
        buffer[: len(chunk)] = chunk
        return len(chunk)


def chunked_body(chunks: Iterable[bytes | BaseException]) -> io.BufferedReader:
    """A body whose every read returns exactly one of ``chunks`` (or raises it)."""
    return io.BufferedReader(_Chunks(chunks), buffer_size=1 << 20)


def new_mock() -> responses.RequestsMock:
    return responses.RequestsMock(registry=OrderedRegistry, assert_all_requests_are_fired=True)


def add_settings(mock: responses.RequestsMock, *, cookie: str = "hf-chat=abc; Path=/; HttpOnly; SameSite=Lax",
                 **kwargs: Any) -> None:
    if "body" not in kwargs:
        kwargs.setdefault("json", {"type": "redirect", "status": 303, "location": BASE + "/"})
    headers = {"Set-Cookie": cookie, **kwargs.pop("headers", {})}
    mock.add(responses.POST, BASE + "/settings", headers=headers, **kwargs)


def add_create(mock: responses.RequestsMock, cid: str = CID, **kwargs: Any) -> None:
    kwargs.setdefault("json", {"conversationId": cid})
    mock.add(responses.POST, BASE + "/conversation", **kwargs)


def add_prompt(mock: responses.RequestsMock, chunks: Iterable[bytes | BaseException] | None = None,
               cid: str = CID, **kwargs: Any) -> None:
    if chunks is not None:
        kwargs["body"] = chunked_body(chunks)
        kwargs.setdefault("content_type", "text/event-stream")
    mock.add(responses.POST, f"{BASE}/conversation/{cid}", **kwargs)


def add_stop(mock: responses.RequestsMock, cid: str = CID, **kwargs: Any) -> None:
    kwargs.setdefault("body", b"")
    mock.add(responses.POST, f"{BASE}/conversation/{cid}/stop-generating", **kwargs)


def add_delete(mock: responses.RequestsMock, cid: str = CID, **kwargs: Any) -> None:
    kwargs.setdefault("body", b"")
    mock.add(responses.DELETE, f"{BASE}/conversation/{cid}", **kwargs)


def add_cut_short(mock: responses.RequestsMock, chunks: Iterable[bytes | BaseException]) -> None:
    """The flow of a reply cut short: settings, create, prompt, then stop-generating and delete."""
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, chunks)
    add_stop(mock)
    add_delete(mock)


def numbered_server(rest: str = " is here.") -> Iterator[Any]:
    """A local server whose Nth reply is "Answer number N" + ``rest``; ``.prompts`` holds the model
    prompts it was given, and no conversation may be left alive at the end."""
    from h2o_sdk.testing import serve

    prompts: list[str] = []

    def reply(prompt: str) -> str:
        prompts.append(prompt)
        return f"Answer number {len(prompts)}{rest}"

    with serve(pace=0, reply=reply) as server:
        server.prompts = prompts
        yield server
        assert server.live_conversations == 0


def calls(mock: responses.RequestsMock) -> list[tuple[str, str]]:
    """``(method, path)`` of every request the mock saw, in order, once the background cleanup has run."""
    from h2o_sdk._lifecycle import wait_idle

    assert wait_idle()
    out = []
    for call in mock.calls:
        assert call.request.url is not None and call.request.method is not None
        out.append((call.request.method, call.request.url.removeprefix(BASE)))
    return out


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A loopback server that accepts connections and never answers: its URL, and the connections it took."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        listener.close()
