"""The local server against bytes captured from the real chat-ui 0.4 (tests/data, from shared/captures)."""

from __future__ import annotations

import ast
import json
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

import h2o_sdk.testing
from h2o_sdk.testing import MODELS, ChatServer, Fault, serve

from .captures import parse_http as parse_captured

DATA = Path(__file__).parent / "data"
CAPTURED_REPLY = "Hello! I am a fake h2oGPT. How can I help you today?"


def parse_http(raw: bytes) -> tuple[int, dict[str, str], list[bytes], bool]:
    """Status, headers (lower-case names, the first of each), body chunks, and whether the body was terminated."""
    status, headers, chunks, terminated = parse_captured(raw)
    return status, {name: values[0] for name, values in headers.items()}, chunks, terminated


def capture(name: str) -> tuple[int, dict[str, str], list[bytes], bool]:
    return parse_http((DATA / f"stream_{name}.http").read_bytes())


def live(server: ChatServer, **parameters: Any) -> tuple[int, dict[str, str], list[bytes], bool]:
    """One prompt POST over a raw socket, read to the connection's close."""
    # The cookie is handled by hand: requests never returns a Secure cookie over http.
    settings = requests.post(server.url + "/settings", data={"ethicsModalAccepted": "true", "activeModel": MODELS[0]},
                             headers={"Referer": server.url + "/"})
    cookie = settings.headers["set-cookie"].split(";")[0]
    cid = requests.post(server.url + "/conversation", json={"model": MODELS[0]},
                        headers={"Cookie": cookie}).json()["conversationId"]
    body = json.dumps({"inputs": "Hello", "parameters": {"temperature": 0.4, **parameters}, "stream": True,
                       "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False,
                                   "use_cache": False, "web_search_id": ""}}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    request = (f"POST /conversation/{cid} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request.encode() + body)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    return parse_http(raw)


def event_shape(chunk: bytes) -> Any:
    """An event's framing and JSON key structure, values left out."""
    assert chunk.startswith(b"data:") and chunk.endswith(b"\n\n")
    obj = json.loads(chunk[5:])

    def shape(value: Any) -> Any:
        return {k: shape(v) for k, v in value.items()} if isinstance(value, dict) else type(value).__name__

    return list(obj), shape(obj)


@pytest.fixture
def server() -> Any:
    with serve(pace=0, reply=CAPTURED_REPLY, secure_cookie=True) as s:
        yield s


def test_ok_stream_matches_the_capture(server: ChatServer) -> None:
    want_status, want_headers, want_chunks, want_done = capture("ok")
    status, headers, chunks, done = live(server, details=True)
    assert (status, done) == (want_status, want_done) == (200, True)
    for name in ("content-type", "cache-control", "transfer-encoding"):
        assert headers[name] == want_headers[name]
    cookie = (r"hf-chat=[0-9a-f-]{36}; Path=/; Expires=\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT; "
              r"HttpOnly; Secure; SameSite=None")
    assert re.fullmatch(cookie, want_headers["set-cookie"]) and re.fullmatch(cookie, headers["set-cookie"])
    # one event per chunk, each shaped like the captured ones
    assert [event_shape(c) for c in chunks[:-1]] == [event_shape(want_chunks[0])] * (len(chunks) - 1)
    assert event_shape(chunks[-1]) == event_shape(want_chunks[-1])
    last, want_last = json.loads(chunks[-1][5:]), json.loads(want_chunks[-1][5:])
    assert last["generated_text"] == want_last["generated_text"] == CAPTURED_REPLY
    assert (last["token"]["id"], last["token"]["text"], last["token"]["special"]) == (11, "<|endoftext|>", True)
    assert last["details"]["finish_reason"] == want_last["details"]["finish_reason"]


def test_in_band_error_matches_the_capture(server: ChatServer) -> None:
    _, _, want_chunks, want_done = capture("stream-error")
    server.inject(Fault(error_after=3))
    status, _, chunks, done = live(server)
    assert status == 200 and done == want_done is True
    assert len(chunks) == len(want_chunks) == 4
    assert chunks[-1] == want_chunks[-1]


def test_dropped_upstream_matches_the_capture(server: ChatServer) -> None:
    _, _, want_chunks, want_done = capture("die")
    server.inject(Fault(drop_after=3))
    status, _, chunks, done = live(server)
    assert status == 200 and done is want_done is False
    assert len(chunks) == len(want_chunks) == 3


@pytest.mark.parametrize("status", [422, 429, 500])
def test_tgi_errors_pass_through_like_the_capture(server: ChatServer, status: int) -> None:
    want_status, want_headers, want_body, _ = capture(f"http{status}")
    server.inject(Fault(status=status))
    got_status, headers, body, _ = live(server)
    assert got_status == want_status == status
    assert headers["content-type"] == want_headers["content-type"] == "application/json"
    assert json.loads(body[0]) == json.loads(want_body[0])


def test_the_server_never_imports_the_clients_private_modules() -> None:
    package = Path(h2o_sdk.testing.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = {0: "", 1: "h2o_sdk.testing", 2: "h2o_sdk"}[node.level]
                module = ".".join(filter(None, [base, node.module or ""]))
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(name.startswith("h2o_sdk._") for name in names), f"{path.name} imports {names}"
