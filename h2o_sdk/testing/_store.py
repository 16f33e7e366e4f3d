"""What every family of the emulator shares: the models, faults, records, sessions and conversations.

Written from the wire contract with its own literals (``shared/protocol.md``,
``shared/protocol-eras.md``); it never imports the client's modules.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MODELS", "Fault", "Record"]

#: The models the emulator serves; the first is the default ``activeModel``.
MODELS = (
    "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1",
    "h2oai/h2ogpt-gm-oasst1-en-2048-open-llama-13b",
)

COOKIE = "hf-chat"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
CONV_ID = re.compile(r"^[0-9a-f]{24}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
NOT_FOUND = {"message": "Conversation not found"}
WELCOME = "You need to accept the welcome modal first"
LOGIN = "You have to be logged in."
RATE_LIMITED = "You are sending too many messages. Try again later."
#: A page of chat-ui's SvelteKit app (an error page when ``body`` says so): every release's pages carry
#: ``x-sveltekit-page: true`` and link their ``_app/immutable`` assets relative to the app root (captures).
SVELTE_PAGE = (
    "<!DOCTYPE html>\n<html lang=\"en\" class=\"h-full\">\n\t<head>\n\t\t<meta charset=\"utf-8\" />\n"
    "\t\t<link href=\"{assets}/assets/0.css\" rel=\"stylesheet\">\n"
    "\t\t<link rel=\"modulepreload\" href=\"{assets}/entry/start.js\">\n"
    "\t\t<title>{title}</title>\n\t</head>\n\t<body>{body}\n\t\t<script>\n\t\t\t__sveltekit_app = {{\n"
    "\t\t\t\tbase: new URL(\"{base}\", location).pathname.slice(0, -1)\n\t\t\t}};\n\t\t</script>\n"
    "\t</body>\n</html>\n"
)
#: What the fake TGI answers for each upstream status (protocol.md 3.4; the captures' fake).
TGI_BODIES: Mapping[int, Mapping[str, str]] = {
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
            ``"stop"``, ``"delete"`` or ``"read"`` (reading a stored
            conversation: ``__data.json``, ``/api/v2/conversations/{id}``).
        status: Answer with this HTTP status instead (with a chat-ui body, or
            for ``"prompt"`` a TGI body; 429 and 503 carry ``Retry-After``).
            For ``"prompt"`` from 0.7 on it is the model server's status,
            which chat-ui reports in-band (HTTP 200 and a ``status: error``).
        body: The error body to send with ``status`` (JSON-able or ``str``).
        retry_after: The ``Retry-After`` value sent with ``status``.
        error_after: Send an in-band error event after this many tokens.
        error_type: The in-band error's ``error_type``.
        error_message: The in-band error's message.
        drop_after: Close the connection after this many tokens, without the
            terminating chunk.
        upstream_die_after: The model server dies after this many tokens: 0.4
            cuts the body without its end; from 0.7 on chat-ui reports
            ``terminated`` in-band and ends as its release does (0.10 retries
            and sends the tokens again first).
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
        pace: Seconds between tokens for this reply (the server's ``pace`` otherwise).
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
    upstream_die_after: int | None = None
    stall: float = 0.0
    stall_after: int = 0
    malformed_after: int | None = None
    oversized_after: int | None = None
    oversized_bytes: int = 2 * 1024 * 1024
    close_delimited: bool = False
    line_ending: str = "\n"
    chunk_size: int | None = None
    delay: float = 0.0
    pace: float | None = None
    times: int = 1

    def __post_init__(self) -> None:
        if self.step not in ("settings", "create", "prompt", "stop", "delete", "read"):
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
class Conversation:
    """One stored conversation.

    ``messages`` holds ``{"id", "from", "content", "createdAt", "updatedAt"}``
    dicts in the order the server added them; tree families add
    ``ancestors`` and ``children`` and start with a system root (``root_id``).
    """

    id: str
    session: str
    model: str
    title: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False
    deleted: bool = False
    root_id: str | None = None
    preprompt: str = ""
    updated: str = ""
    last_stop: float = -1e9  # when a stop last took effect (0.4 ignores another within 30 s)
    stop_point: tuple[str, int] | None = None  # HEAD: the stop's (generationId, seenContentLength)

    def branch(self) -> list[dict[str, Any]]:
        """The current branch, without the system root: the last message and its ancestors."""
        if not self.messages or "ancestors" not in self.messages[-1]:
            return [m for m in self.messages if m["from"] != "system"]
        by_id = {m["id"]: m for m in self.messages}
        leaf = self.messages[-1]
        chain = [by_id[a] for a in leaf["ancestors"] if a in by_id] + [leaf]
        return [m for m in chain if m["from"] != "system"]


@dataclass
class Session:
    accepted: bool = False
    active_model: str = MODELS[0]


def now_iso() -> str:
    """The time as JavaScript's ``Date.toISOString`` writes it."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class RateLimiter:
    """chat-ui's ``messagesPerMinute``: counted per session and per client address (protocol-eras.md 3.4)."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._sent: dict[str, list[float]] = {}

    def allow(self, *keys: str) -> bool:
        if self.per_minute is None:
            return True
        now = time.monotonic()
        with self._lock:
            recent = {key: [t for t in self._sent.get(key, []) if now - t < 60] for key in keys}
            allowed = all(len(times) < self.per_minute for times in recent.values())
            for key, times in recent.items():
                if allowed:
                    times.append(now)
                self._sent[key] = times
        return allowed


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any) -> bytes:
    # Node's JSON.stringify escapes a lone surrogate (well-formed JSON.stringify, ES2019);
    # it can only stand inside a string, so the escape is valid JSON there.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def cookie_value(header: str | None) -> str | None:
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


_MARKER = re.compile(r"\[\[tgi:(http422|http429|http500|stream-error|die|slow)\]\]")
_REPLY_MARKER = re.compile(r"\[\[tgi:reply=(.*?)\]\]", re.S)


def marker_fault(text: str) -> Fault | None:
    """The fault a prompt asks for with the markers of ``shared/peer/fake_tgi.py``.

    ``[[tgi:http422]]``, ``[[tgi:http429]]``, ``[[tgi:http500]]``: the model
    server answers that status; ``[[tgi:stream-error]]``: an error after three
    tokens; ``[[tgi:die]]``: the model server dies after three tokens;
    ``[[tgi:slow]]``: 0.5 s between tokens. So the captures' prompts replay here.
    """
    found = set(_MARKER.findall(text))
    if not found:
        return None
    for name in ("http422", "http429", "http500"):
        if name in found:
            return Fault(status=int(name[4:]))
    if "stream-error" in found:
        return Fault(error_after=3)
    if "die" in found:
        return Fault(upstream_die_after=3)
    return Fault(pace=0.5)


def marker_reply(text: str) -> str | None:
    """The reply a prompt names with ``[[tgi:reply=TEXT]]``."""
    found = _REPLY_MARKER.search(text)
    return found.group(1) if found else None
