"""What chat-ui from 0.7 on does besides text: web search, files, and the updates of tools and reasoning.

Read off the tagged releases' code (``runWebSearch``, ``uploadFile``, the
message route's file checks; protocol-eras.md 3-8) and driven by the
:class:`Era` table. The search engine is a fake by default (no network):
:func:`fake_search`; ``search=None`` acts out a release with no search engine
configured, which sends a webSearch ``error`` update and answers without sources.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ._era import Era

__all__ = ["Search", "Upload", "fake_search", "marker_updates", "read_uploads", "stored_files", "web_search"]

#: A search engine: the query to ``{"title", "link"}`` results.
Search = Callable[[str], Sequence[Mapping[str, str]]]

# searchWeb's error without any engine configured, as each release words it (v0.7/v0.8.4, v0.9.4).
_NO_ENGINE_OLD = "No You.com or Serper.dev or SerpAPI key found"
_NO_ENGINE = ("No configuration found for web search. Please set USE_LOCAL_WEBSEARCH, SEARXNG_QUERY_URL, "
              "SERPER_API_KEY, YDC_API_KEY, SERPSTACK_API_KEY, or SEARCHAPI_KEY in your environment variables.")
_IMAGE_LIMIT = "File too large, should be <2MB and 224x224 max."  # v0.7, v0.8.4
_FILE_LIMIT = "File too large, should be <10MB"  # v0.9.2 on


def fake_search(query: str) -> list[dict[str, str]]:
    """Two made-up results for ``query`` (the local server's default engine; nothing is fetched)."""
    words = quote(query.strip()[:60] or "search")
    return [{"title": f"{query.strip()[:60]} - Example Encyclopedia", "link": f"https://example.com/wiki/{words}"},
            {"title": f"{query.strip()[:60]} - Example News", "link": f"https://example.org/news/{words}"}]


def web_search(era: Era, query: str, engine: Search | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The webSearch updates of one search, and what the release stores on the reply (``webSearch``).

    The real releases ask the model for a search query; here the prompt is the query.
    """
    key = era.search or "subtype"

    def step(message: str, args: list[str] | None = None, kind: str = "update") -> dict[str, Any]:
        update: dict[str, Any] = {"type": "webSearch", key: kind, "message": message}
        if args is not None:
            update["args"] = args
        return update

    updates = [step("Searching Google", [query])]
    stored: dict[str, Any] = {"prompt": query, "searchQuery": query, "results": [], "contextSources": []}
    if engine is None:
        if key == "messageType":
            updates.append(step(era.search_error, [json.dumps(_NO_ENGINE_OLD)], "error"))
        else:
            updates.append(step(era.search_error, [_NO_ENGINE], "error"))
    else:
        results = [dict(r) for r in engine(query) if isinstance(r.get("link"), str)][:10]
        if not results:
            failure = "No results found for this search query"
            updates.append(step(era.search_error, [json.dumps(failure) if key == "messageType" else failure],
                                "error"))
        else:
            updates.append(step("Browsing results" if key == "messageType" else "Browsing search results"))
            updates += [step("Browsing webpage", [r["link"]]) for r in results]
            updates.append(step("Extracting relevant information"))
            if key == "messageType":
                # v0.7/v0.8.4 send the whole context sources: the result and the passages used.
                sources: list[dict[str, Any]] = [
                    {"title": r.get("title", ""), "link": r["link"], "hostname": urlsplit(r["link"]).hostname or "",
                     "context": [{"idx": 0, "text": r.get("title", "")}]} for r in results]
            else:
                sources = [{"link": r["link"], "title": r.get("title", "")} for r in results]
            updates.append({"type": "webSearch", key: "sources", "message": "sources", "sources": sources})
            stored.update(results=results, contextSources=sources)
    if key == "subtype":
        updates.append({"type": "webSearch", "subtype": "finished"})
    return updates, stored


@dataclass(frozen=True)
class Upload:
    """A file sent with a message."""

    name: str
    mime: str
    data: bytes


def read_uploads(era: Era, payload: Mapping[str, Any], parts: Sequence[tuple[str, str, bytes]]) -> list[Upload] | None:
    """The files of a message: from its JSON ``files`` (base64 strings) or its multipart ``files`` parts.

    Args:
        parts: The multipart ``files`` parts as ``(filename, content type, content)``.

    Returns:
        The files, or ``None`` when they cannot be read (the release fails with a 500).
    """
    if era.files == "parts":
        out = []
        for filename, content_type, content in parts:
            if not content:
                continue  # the route drops empty parts
            kind, _, name = filename.partition(";")
            if kind != "base64":
                return None  # "hash" parts name files this emulator never stored; anything else fails the zod check
            try:
                data = base64.b64decode(content, validate=False)
            except (binascii.Error, ValueError):
                return None
            out.append(Upload(name, content_type or "application/octet-stream", data))
        return out
    files = payload.get("files")
    if files is None:
        return []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    try:
        return [Upload("image.png", "image/png", base64.b64decode(f)) for f in files]
    except (binascii.Error, ValueError):
        return None


def check_uploads(era: Era, uploads: Sequence[Upload]) -> tuple[int, str] | None:
    """The release's refusal of the files, ``(status, message)``; ``None`` when it takes them."""
    if era.files == "base64":
        for upload in uploads:
            size = image_size(upload.data)
            if size is None:
                return 500, "An error occurred"  # image-size throws on what is not an image
            if len(upload.data) > 2 * 1024 * 1024 or size[0] > 224 or size[1] > 224:
                return 413, _IMAGE_LIMIT
        return None
    if any(len(u.data) > 10 * 1024 * 1024 for u in uploads):
        return 413, _FILE_LIMIT
    return None


def stored_files(era: Era, uploads: Sequence[Upload]) -> list[Any]:
    """What the user message keeps: the files' hashes (0.7, 0.8), or ``{type, value, mime, name}`` (0.9 on)."""
    # uploadFile hashes the file's text (sha256(await file.text())): bytes that are not UTF-8 count as U+FFFD.
    hashes = [hashlib.sha256(u.data.decode("utf-8", "replace").encode()).hexdigest() for u in uploads]
    if era.files == "base64":
        return hashes
    return [{"type": "hash", "value": h, "mime": u.mime, "name": u.name} for h, u in zip(hashes, uploads, strict=True)]


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG image; ``None`` for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        index = 2
        while index + 9 < len(data):
            if data[index] != 0xFF:
                return None
            marker = data[index + 1]
            length = struct.unpack(">H", data[index + 2:index + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[index + 5:index + 9])
                return int(width), int(height)
            index += 2 + length
    return None


def marker_updates(era: Era, text: str, model: str) -> list[dict[str, Any]]:
    """Updates a prompt asks the local model for with ``[[chat-ui:NAME]]`` markers, where the release sends them.

    ``tool`` (a call and its result), ``tool-error``, ``file`` (a file made
    for the reply), ``reasoning`` (a status and two pieces), ``router`` (the
    router's choice) and ``unknown`` (an update type no release sends, for
    clients that must survive a newer release).
    """
    out: list[dict[str, Any]] = []
    if "[[chat-ui:router]]" in text and "router" in era.extras:
        out.append({"type": "routerMetadata", "route": "casual_conversation", "model": model, "provider": "local"})
    if "[[chat-ui:reasoning]]" in text and "reasoning" in era.extras:
        out += [{"type": "reasoning", "subtype": "status", "status": "Thinking..."},
                {"type": "reasoning", "subtype": "stream", "token": "The user wants"},
                {"type": "reasoning", "subtype": "stream", "token": " an answer."}]
    if "tool" in era.extras:
        call = {"name": "fetch_url", "parameters": {"url": "https://example.com/"}}
        if "[[chat-ui:tool]]" in text:
            tool_id = str(uuid.uuid4())
            out += [{"type": "tool", "subtype": "call", "uuid": tool_id, "call": call},
                    {"type": "tool", "subtype": "result", "uuid": tool_id,
                     "result": {"status": "success", "call": call, "outputs": [{"text": "Example Domain"}],
                                "display": True}}]
        if "[[chat-ui:tool-error]]" in text:
            tool_id = str(uuid.uuid4())
            out += [{"type": "tool", "subtype": "call", "uuid": tool_id, "call": call},
                    {"type": "tool", "subtype": "error", "uuid": tool_id, "message": "the tool failed"}]
    if "[[chat-ui:file]]" in text and "file" in era.extras:
        out.append({"type": "file", "name": "image.png", "mime": "image/png",
                    "sha": hashlib.sha256(b"image.png").hexdigest()})
    if "[[chat-ui:unknown]]" in text:
        out.append({"type": "hologram", "subtype": "beam", "payload": {"x": 1}})
    return out
