"""chat-ui HEAD's resumable generations (2026-06 on, after v0.10.0): what the "0.10" local server adds.

The client names each generation (``generationId`` in the message); the
server keeps every update of the run (keepAlive left out, tokens without
their padding) and goes on generating when the connection drops.
``GET /conversation/{id}/stream?generationId=&fromSeq=`` (or ``Last-Event-ID``)
replays the run after that sequence number and follows it live as real
server-sent events, and a stop may carry ``{generationId,
seenContentLength}`` so the text kept is what the client showed
(captures ``chat-ui-HEAD-c100c162/head_*``; protocol-eras.md 8.5).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Run", "clamp", "replay"]

#: Seconds between ``: heartbeat`` comments while a followed run is quiet.
HEARTBEAT = 1.0
_HEADERS = {"cache-control": "no-cache, no-transform", "connection": "keep-alive",
            "content-type": "text/event-stream", "x-accel-buffering": "no"}


class Run:
    """One generation's updates, as the server keeps them for replay."""

    def __init__(self) -> None:
        self.updates: list[bytes] = []
        self.status: str | None = None  # "completed", "interrupted" or "error" once it ended
        self.cond = threading.Condition()

    def record(self, update: Mapping[str, Any]) -> None:
        if update.get("type") == "status" and update.get("status") == "keepAlive":
            return
        if update.get("type") == "stream" and isinstance(update.get("token"), str):
            update = {**update, "token": update["token"].rstrip("\x00")}  # kept without the padding
        with self.cond:
            self.updates.append(json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode())
            self.cond.notify_all()

    def end(self, status: str) -> None:
        with self.cond:
            if self.status is None:
                self.status = status
            self.cond.notify_all()


def clamp(text: str, seen: int) -> str:
    """``text`` cut to ``seen`` UTF-16 code units, as JavaScript's ``slice`` counts."""
    units = text.encode("utf-16-le")[: 2 * max(seen, 0)]
    return units.decode("utf-16-le", "ignore")


def replay(run: Run | None, after: int, write: Callable[[bytes], bool], stopping: threading.Event,
           limit: float = 300.0) -> None:
    """Write the run's updates after sequence number ``after``, follow it until it ends, then ``end``.

    Args:
        write: Sends one SSE chunk; ``False`` once the client has gone.
        stopping: The server is shutting down.
        limit: At most this many seconds (tests end by themselves).
    """
    if run is None:
        write(b'event: end\ndata: {"status":"gone"}\n\n')
        return
    index = max(after, 0)
    deadline = time.monotonic() + limit
    while not stopping.is_set() and time.monotonic() < deadline:
        with run.cond:
            if index >= len(run.updates) and run.status is None:
                run.cond.wait(HEARTBEAT)
            pending = run.updates[index:]
            status = run.status
        if not pending and status is None:
            if not write(b": heartbeat\n\n"):
                return
            continue
        for data in pending:
            index += 1
            if not write(b"id: %d\nevent: update\ndata: %s\n\n" % (index, data)):
                return
        if status is not None and index >= len(run.updates):
            write(b'event: end\ndata: {"status":"%s"}\n\n' % status.encode())
            return


def headers() -> dict[str, str]:
    """The replay's response headers (head_stream_reattach_*)."""
    return dict(_HEADERS)
