"""What the server stored: the messages of a conversation, read back; no I/O.

Two sources, by family: SvelteKit's page data ``GET /conversation/{id}/__data.json``
(devalue: one flat array whose containers hold indexes into it; v0.9 streams
it as ``text/sveltekit-data``, a first line and then one line per deferred
chunk), and ``GET /api/v2/conversations/{id}`` (superjson ``{"json": ...}``).
A tree conversation's current branch is its last message (the server only
appends) and that message's ``ancestors``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import ProtocolError

__all__ = ["MAX_READ_BACK", "branch", "messages_from_api2", "messages_from_page"]

#: The largest read-back body accepted, in bytes.
MAX_READ_BACK = 8 * 1024 * 1024


def messages_from_page(body: bytes) -> list[dict[str, Any]]:
    """The ``messages`` of a conversation page's data.

    Raises:
        ProtocolError: Not page data, or no conversation in it (SvelteKit
            answers 200 with an error node for a deleted or foreign one).
    """
    first = body.split(b"\n", 1)[0]
    document = _json(first, "page data")
    nodes = document.get("nodes") if isinstance(document, Mapping) else None
    if not isinstance(nodes, list):
        raise ProtocolError(f"the conversation page data is not SvelteKit data: {first[:200]!r}")
    for node in reversed(nodes):
        if isinstance(node, Mapping) and node.get("type") == "error":
            error = node.get("error")
            message = error.get("message") if isinstance(error, Mapping) else None
            raise ProtocolError(f"the server could not show the conversation: {message or error!r}")
        if isinstance(node, Mapping) and isinstance(node.get("data"), list):
            data = _unflatten(node["data"])
            if isinstance(data, Mapping) and isinstance(data.get("messages"), list):
                return [m for m in data["messages"] if isinstance(m, dict)]
    raise ProtocolError("the conversation page data holds no messages")


def messages_from_api2(body: bytes) -> list[dict[str, Any]]:
    """The ``messages`` of ``GET /api/v2/conversations/{id}`` (superjson).

    Raises:
        ProtocolError: Not a conversation.
    """
    document = _json(body, "conversation")
    data = document.get("json", document) if isinstance(document, Mapping) else None
    messages = data.get("messages") if isinstance(data, Mapping) else None
    if not isinstance(messages, list):
        raise ProtocolError(f"the server's conversation has no messages: {body[:200]!r}")
    return [m for m in messages if isinstance(m, dict)]


def branch(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The current branch, root first, as ``{"role", "content", "id"}`` dicts (the system root included).

    Linear conversations (no ``ancestors``) are their messages in order.
    """
    chain: Sequence[Mapping[str, Any]] = messages
    if messages and isinstance(messages[-1].get("ancestors"), list):
        by_id = {m.get("id"): m for m in messages}
        leaf = messages[-1]
        chain = [by_id[a] for a in leaf["ancestors"] if a in by_id] + [leaf]
    out = []
    for message in chain:
        role, content, message_id = message.get("from"), message.get("content"), message.get("id")
        if isinstance(role, str) and isinstance(content, str):
            out.append({"role": role, "content": content, "id": message_id if isinstance(message_id, str) else ""})
    return out


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the server's {what} is not JSON: {body[:200]!r}") from exc


def _unflatten(values: list[Any]) -> Any:
    """devalue's ``unflatten``: index 0 is the root; containers hold indexes.

    Dates stay ISO strings; promises and other special values become ``None``.
    """
    done: dict[int, Any] = {}

    def hydrate(index: Any) -> Any:
        if not isinstance(index, int) or isinstance(index, bool) or index < 0 or index >= len(values):
            return None  # undefined, a hole, NaN ... or nonsense
        if index in done:
            return done[index]
        value = values[index]
        if isinstance(value, list):
            if value and isinstance(value[0], str):
                done[index] = value[1] if value[0] == "Date" and len(value) > 1 else None
                return done[index]
            items: list[Any] = []
            done[index] = items  # before the children: devalue allows cycles
            items.extend(hydrate(i) for i in value)
            return items
        if isinstance(value, dict):
            fields: dict[str, Any] = {}
            done[index] = fields
            for key, i in value.items():
                fields[key] = hydrate(i)
            return fields
        done[index] = value
        return value

    try:
        return hydrate(0)
    except RecursionError as exc:
        raise ProtocolError("the conversation page data is nested too deeply") from exc
