"""The captures of the real chat-ui of each era (tests/data/captures, copied from shared/captures)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CAPTURES = Path(__file__).parent / "data" / "captures"

#: Which family each captured release speaks.
FAMILY_OF = {
    "chat-ui-v0.6": "0.4",
    "chat-ui-v0.7": "0.7",
    "chat-ui-v0.8.4": "0.8",
    "chat-ui-v0.9.4": "0.9",
    "chat-ui-v0.10.0": "0.10",
    "chat-ui-HEAD-c100c162": "0.10",
}


@dataclass(frozen=True)
class Capture:
    release: str
    name: str
    entry: dict[str, Any]  # the release's index.json row
    status: int
    headers: dict[str, list[str]]  # lower-case names
    chunks: list[bytes]  # the body, one HTTP chunk each (one piece when not chunked)
    terminated: bool  # a chunked body that got its last chunk

    @property
    def family(self) -> str:
        return FAMILY_OF[self.release]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def __str__(self) -> str:
        return f"{self.release}/{self.name}"


def parse_http(raw: bytes) -> tuple[int, dict[str, list[str]], list[bytes], bool]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get("transfer-encoding") != ["chunked"]:
        return status, headers, [rest], True
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        if not size_line:
            break
        size = int(size_line, 16)
        if size == 0:
            return status, headers, chunks, True
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return status, headers, chunks, False


def load(release: str, name: str) -> Capture:
    entries = {e["name"]: e for e in json.loads((CAPTURES / release / "index.json").read_text())}
    status, headers, chunks, terminated = parse_http((CAPTURES / release / f"{name}.http").read_bytes())
    return Capture(release, name, entries[name], status, headers, chunks, terminated)


def all_captures(*prefixes: str) -> list[Capture]:
    out = []
    for release in FAMILY_OF:
        for entry in json.loads((CAPTURES / release / "index.json").read_text()):
            if entry["name"].startswith(prefixes):
                out.append(load(release, entry["name"]))
    return out
