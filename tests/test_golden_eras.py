"""The local server of each family against the real chat-ui it emulates, capture by capture.

Each release's captured requests (``tests/data/captures/chat-ui-<tag>/index.json``,
in the order they were recorded) are replayed against the emulator of its
family, with the ids, the origin and the markers of the fake model server
mapped; every answer is then compared with the captured one: status, content
type, cookie and its attributes, and the body (exact for errors, the same keys
for JSON, the same update types in order for streams, the padding, whether
the body ended).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from h2o_sdk._protocol._readback import messages_from_api2, messages_from_page
from h2o_sdk.testing import ChatServer, serve

from .captures import CAPTURES, Capture, load, parse_http

RELEASES = {"chat-ui-v0.7": "0.7", "chat-ui-v0.8.4": "0.8", "chat-ui-v0.9.4": "0.9", "chat-ui-v0.10.0": "0.10"}
REPLY = "Hello! I am a fake h2oGPT. How can I help you today?"
# Not replayed: the model server stopped (down_*, upstream_down), HEAD's resumable streams, and
# v0.8.4's legacy RATE_LIMIT (which it ignores).
SKIPPED = re.compile(r"^(down_|upstream_down|conv_read_after_upstream_down|head_|rl_legacy_)")
HEX24 = re.compile(r"[0-9a-f]{24}")
LOOPBACK = re.compile(r"http://127\.0\.0\.1:\d+")  # where the real release ran
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    chunks: list[bytes]
    ended: bool

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


def raw_request(server: ChatServer, method: str, path: str, headers: dict[str, str], body: bytes,
                *, wait: float = 8.0, started: threading.Event | None = None) -> Answer:
    """Send exactly these bytes (with Connection: close) and read the answer until the server ends it,
    or until it has been quiet for 0.3 s after a finalAnswer's padding (0.7 never ends)."""
    host, port = server.url.split("//")[1].split("/")[0].rsplit(":", 1)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")]
    if body or method in ("POST", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    sock = socket.create_connection((host, int(port)), timeout=wait)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            sock.settimeout(0.3 if b" " * 4096 in data else max(0.1, deadline - time.monotonic()))
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            data += piece
            if started is not None and b'"type":"stream"' in data:
                started.set()
    finally:
        sock.close()
    status, headers, chunks, ended = parse_http(data)
    return Answer(status, headers, chunks, ended)


class Replay:
    """The captured flow of one release, against a fresh emulator of its family."""

    def __init__(self, release: str, server: ChatServer) -> None:
        self.release = release
        self.server = server
        entries = json.loads((CAPTURES / release / "index.json").read_text())
        self.captures = [load(release, e["name"]) for e in entries]
        self.ids: dict[str, str] = {}  # captured id -> the emulator's
        self.answers: dict[str, Answer] = {}
        # conversation ids the captures show only after their delete, or that are not ids of conversations
        self.deleted = {json.loads(c.body)["conversationId"] for c in self.captures
                        if c.name.endswith("conv_create") and c.status == 200} | {
            HEX24.findall(c.entry["path"])[0] for c in self.captures if c.name.startswith("msg_other_session")}

    def _create_for(self, capture: Capture) -> str:
        headers = {k: LOOPBACK.sub(self.server.url, v) for k, v in capture.entry["request_headers"].items()
                   if k in ("Cookie", "Origin", "Referer")}
        headers.update({"Content-Type": "application/json", "Accept": "*/*"})
        body = json.dumps({"model": self.server.models[0]}).encode()
        answer = raw_request(self.server, "POST", self.server.base_path + "/conversation", headers, body)
        assert answer.status == 200, answer.body
        return str(json.loads(answer.body)["conversationId"])

    def run(self, names: re.Pattern[str]) -> None:
        by_name = {c.name: c for c in self.captures}
        for capture in self.captures:
            if SKIPPED.match(capture.name) or not names.match(capture.name) or capture.name in self.answers:
                continue
            if capture.name == "stop_generating":
                self._stop(capture, by_name["msg_stream_stopped"])
                continue
            self.answers[capture.name] = self._send(capture)

    def _request(self, capture: Capture) -> tuple[str, str, dict[str, str], bytes]:
        entry = capture.entry
        path = self._map(entry["path"], capture)
        headers = {k: LOOPBACK.sub(self.server.url, v) for k, v in entry["request_headers"].items()}
        raw = (CAPTURES / self.release / f"{capture.name}.request.http").read_bytes()
        body = raw.partition(b"\r\n\r\n")[2]
        body = self._map(body.decode("utf-8"), capture).encode("utf-8")
        return entry["method"], path, headers, body

    def _send(self, capture: Capture, started: threading.Event | None = None) -> Answer:
        method, path, headers, body = self._request(capture)
        answer = raw_request(self.server, method, path, headers, body, started=started)
        if capture.name.endswith("conv_create") and answer.status == 200:
            mine = json.loads(answer.body)["conversationId"]
            self.ids[json.loads(capture.body)["conversationId"]] = mine
        return answer

    def _stop(self, stop: Capture, stopped: Capture) -> None:
        started = threading.Event()
        result: dict[str, Answer] = {}
        thread = threading.Thread(target=lambda: result.setdefault("a", self._send(stopped, started)))
        thread.start()
        assert started.wait(10)
        self.answers[stop.name] = self._send(stop)
        thread.join(30)
        self.answers[stopped.name] = result["a"]

    def _map(self, text: str, capture: Capture) -> str:
        """Captured conversation and message ids to the emulator's."""
        def conversation(match: re.Match[str]) -> str:
            found = match.group()
            if found not in self.ids and found != "0" * 24 and found not in self.deleted:
                self.ids[found] = self._create_for(capture)  # made by the capture client off the record
            return self.ids.get(found, found)

        text = HEX24.sub(conversation, text)
        for found in set(UUID.findall(text)):
            mine = self._message_id(found, capture)
            if mine is not None:
                text = text.replace(found, mine)
        return text

    def _message_id(self, captured: str, capture: Capture) -> str | None:
        """A captured message id as the emulator's: the message at the same place in the same conversation,
        found in a later captured read-back that holds it."""
        start = self.captures.index(capture)
        # The read-backs after the request first, then those before it, nearest first (an id can be
        # shown only before the request that names it: msg_continue_not_last).
        for later in [*self.captures[start:], *self.captures[start - 1::-1]]:
            if not later.name.startswith("conv_read_after") or captured.encode() not in later.body:
                continue
            captured_messages = _messages(later)
            index = next((i for i, m in enumerate(captured_messages) if m.get("id") == captured), None)
            conversation_id = self.ids.get(HEX24.findall(later.entry["path"])[0])
            if index is None or conversation_id is None:
                return None
            with self.server._lock:
                stored = self.server._conversations.get(conversation_id)
                messages = list(stored.messages) if stored is not None else []
            return str(messages[index]["id"]) if index < len(messages) else None
        # Never read back (the rate-limit flow): a parent is the conversation's last message.
        found = HEX24.findall(capture.entry["path"])
        conversation_id = self.ids.get(found[0]) if found else None
        with self.server._lock:
            stored = self.server._conversations.get(conversation_id or "")
            if stored is not None and stored.root_id is not None and capture.entry["method"] == "POST":
                return str(stored.messages[-1]["id"])
        return None


def _messages(capture: Capture | Answer) -> list[dict[str, Any]]:
    content_type = capture.header("content-type") or ""
    if "sveltekit" in content_type or b'"nodes"' in capture.body[:100]:
        return messages_from_page(capture.body)
    return messages_from_api2(capture.body)


_REPLAYS: dict[str, Replay] = {}


def replay(release: str) -> Replay:
    if release not in _REPLAYS:
        _REPLAYS[release] = _run(release)
    return _REPLAYS[release]


def _fake_tokenize(text: str) -> list[str]:
    """How ``shared/peer/fake_tgi.py`` splits a reply (the model's choice, not chat-ui's)."""
    return re.findall(r"\s*\S+", text) or [text]


def _run(release: str) -> Replay:
    from h2o_sdk.testing import _jsonl

    original, _jsonl.tokenize = _jsonl.tokenize, _fake_tokenize  # type: ignore[assignment]
    try:
        return _replay(release)
    finally:
        _jsonl.tokenize = original


def _replay(release: str) -> Replay:
    family = RELEASES[release]
    exact = {"release": "v0.10.0"} if release == "chat-ui-v0.10.0" else {}  # not HEAD: the tag itself
    with serve(protocol=family, pace=0.02, reply=REPLY, secure_cookie=True, keepalive=0.05, hold_open=5,
               search=None, **exact) as server:  # the releases ran with no search engine configured
        main = Replay(release, server)
        main.run(re.compile(r"^(?!rl_)"))
    if any(c.name.startswith("rl_msg") for c in main.captures):
        with serve(protocol=family, pace=0, reply=REPLY, secure_cookie=True, rate_limit=2, hold_open=1,
                   **exact) as server:
            limited = Replay(release, server)
            limited.run(re.compile(r"^rl_"))
        main.answers.update(limited.answers)
    return main


def cases() -> Iterator[tuple[str, str]]:
    for release in RELEASES:
        for entry in json.loads((CAPTURES / release / "index.json").read_text()):
            if not SKIPPED.match(entry["name"]):
                yield release, entry["name"]


def _update_types(body: bytes) -> tuple[list[str], bool, bool]:
    """The updates' kinds in order (stream runs folded, keepAlive left out), and whether there were
    keepAlive updates and the 4096-space padding."""
    kinds: list[str] = []
    keepalive = False
    for line in body.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        update = json.loads(line)
        kind = update["type"] + (f":{update['status']}" if update["type"] == "status" else "")
        if kind == "status:keepAlive":
            keepalive = True
            continue
        if kinds and kinds[-1] == kind == "stream":
            continue
        kinds.append(kind)
    return kinds, keepalive, b" " * 4096 in body


def _cookie_attributes(value: str) -> dict[str, str]:
    parts = [p.strip() for p in value.split(";")]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts[1:]}


@pytest.mark.parametrize(("release", "name"), list(cases()), ids=lambda v: v)
def test_the_emulator_answers_like_the_real_release(release: str, name: str) -> None:
    captured = load(release, name)
    ours = replay(release).answers[name]
    assert ours.status == captured.status, ours.body[:300]
    assert (ours.header("content-type") or None) == (captured.header("content-type") or None)
    # The session cookie: set by the same answers, with the same attributes (two weeks, from 0.7).
    assert bool(ours.header("set-cookie")) == bool(captured.header("set-cookie"))
    if captured.header("set-cookie"):
        mine, theirs = _cookie_attributes(ours.header("set-cookie") or ""), _cookie_attributes(
            captured.header("set-cookie") or "")
        assert set(mine) == set(theirs)
        assert (parsedate_to_datetime(mine["expires"]).timestamp() - time.time()) == pytest.approx(14 * 86400, abs=3600)
    for header in ("access-control-allow-origin",):
        assert ours.header(header) == captured.header(header)
    content_type = captured.header("content-type") or ""
    stream = captured.entry["method"] == "POST" and captured.status == 200 and name.startswith(
        ("msg_", "upstream_", "rl_msg"))
    if stream:
        kinds, keepalive, padding = _update_types(captured.body)
        assert _update_types(ours.body) == (kinds, keepalive, padding)
        assert ours.ended == captured.terminated  # 0.7 never ends its response
        final = [json.loads(x) for x in captured.body.split(b"\n") if b'"finalAnswer"' in x]
        mine = [json.loads(x) for x in ours.body.split(b"\n") if b'"finalAnswer"' in x]
        assert [set(f) for f in mine] == [set(f) for f in final]
        return
    if not captured.body:
        assert not ours.body
    elif "json" in content_type:
        theirs, mine = json.loads(captured.body), json.loads(ours.body)
        assert type(mine) is type(theirs)
        if isinstance(theirs, dict) and ("message" in theirs or "error" in theirs):
            assert mine.get("error") == theirs.get("error")
            assert mine.get("message") == theirs.get("message") and set(mine) == set(theirs)
        elif name.startswith("conv_read_after"):
            assert [m["from"] for m in _messages(ours)] == [m["from"] for m in _messages(captured)]
            assert [m["content"] for m in _messages(ours)] == [m["content"] for m in _messages(captured)]
        elif isinstance(theirs, dict):
            inner_t, inner_m = theirs.get("json", theirs), mine.get("json", mine)
            assert set(mine) <= set(theirs) and type(inner_m) is type(inner_t)
            if isinstance(inner_t, dict):
                assert set(inner_m) == set(inner_t)
            elif isinstance(inner_t, list) and inner_t and inner_m:
                assert set(inner_m[0]) == set(inner_t[0])
        elif isinstance(theirs, list) and theirs:
            assert mine and set(mine[0]) == set(theirs[0])
    elif "sveltekit" in content_type:
        assert [m["from"] for m in _messages(ours)] == [m["from"] for m in _messages(captured)]
    elif "text/html" in content_type:
        assert ours.body.lstrip()[:15].lower() == captured.body.lstrip()[:15].lower()
    else:
        assert ours.body == captured.body
