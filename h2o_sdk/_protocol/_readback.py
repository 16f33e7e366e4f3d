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

__all__ = [
    "MAX_READ_BACK", "branch", "conversation_from_api2", "conversation_from_page", "conversations_from_api",
    "conversations_from_api2", "conversations_from_layout", "latest_leaf", "messages_from_api2", "messages_from_page",
    "siblings",
]

#: The largest read-back body accepted, in bytes.
MAX_READ_BACK = 8 * 1024 * 1024


def messages_from_page(body: bytes) -> list[dict[str, Any]]:
    """The ``messages`` of a conversation page's data.

    Raises:
        ProtocolError: Not page data, or no conversation in it (SvelteKit
            answers 200 with an error node for a deleted or foreign one).
    """
    return [m for m in conversation_from_page(body)["messages"] if isinstance(m, dict)]


def conversation_from_page(body: bytes) -> Mapping[str, Any]:
    """A conversation page's data: ``messages``, ``title``, ``model``, ``preprompt`` (as the release has them).

    Raises:
        ProtocolError: As :func:`messages_from_page`.
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
                return data
    raise ProtocolError("the conversation page data holds no messages")


def messages_from_api2(body: bytes) -> list[dict[str, Any]]:
    """The ``messages`` of ``GET /api/v2/conversations/{id}`` (superjson).

    Raises:
        ProtocolError: Not a conversation.
    """
    return [m for m in conversation_from_api2(body)["messages"] if isinstance(m, dict)]


def conversation_from_api2(body: bytes) -> Mapping[str, Any]:
    """``GET /api/v2/conversations/{id}``: ``messages``, ``title``, ``model``, ``preprompt``, ... (superjson).

    Raises:
        ProtocolError: Not a conversation.
    """
    document = _json(body, "conversation")
    data = document.get("json", document) if isinstance(document, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(data.get("messages"), list):
        raise ProtocolError(f"the server's conversation has no messages: {body[:200]!r}")
    return data


def conversations_from_layout(body: bytes) -> list[dict[str, Any]]:
    """The session's conversations in the app's root layout data (``GET /__data.json``; 0.4, 0.7).

    Raises:
        ProtocolError: Not SvelteKit data, or no conversation list in it.
    """
    document = _json(body.split(b"\n", 1)[0], "page data")
    nodes = document.get("nodes") if isinstance(document, Mapping) else None
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, Mapping) and isinstance(node.get("data"), list):
            data = _unflatten(node["data"])
            if isinstance(data, Mapping) and isinstance(data.get("conversations"), list):
                return [c for c in data["conversations"] if isinstance(c, dict)]
    raise ProtocolError(f"the app's page data holds no conversation list: {body[:200]!r}")


def conversations_from_api(document: Any) -> list[dict[str, Any]]:
    """``GET /api/conversations?p=N`` (0.8, 0.9): a list of ``{id, title, updatedAt, modelId}``.

    Raises:
        ProtocolError: Not a list.
    """
    if not isinstance(document, list):
        raise ProtocolError(f"GET /api/conversations did not answer a list: {str(document)[:200]!r}")
    return [c for c in document if isinstance(c, dict)]


def conversations_from_api2(document: Any) -> tuple[list[dict[str, Any]], bool]:
    """``GET /api/v2/conversations?p=N`` (0.10): the page's conversations, and whether more follow.

    Raises:
        ProtocolError: Not a page of conversations.
    """
    data = document.get("json", document) if isinstance(document, Mapping) else None
    items = data.get("conversations") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise ProtocolError(f"GET /api/v2/conversations did not answer a page of them: {str(document)[:200]!r}")
    assert isinstance(data, Mapping)
    return [c for c in items if isinstance(c, dict)], bool(data.get("hasMore"))


def branch(messages: Sequence[Mapping[str, Any]], leaf_id: str | None = None) -> list[dict[str, str]]:
    """A branch, root first, as ``{"role", "content", "id"}`` dicts (the system root included).

    The current branch ends at the last message (the server only appends), or
    at ``leaf_id``. Linear conversations (no ``ancestors``) are their messages in order.
    """
    chain: Sequence[Mapping[str, Any]] = messages
    if messages and isinstance(messages[-1].get("ancestors"), list):
        by_id = {m.get("id"): m for m in messages}
        leaf = by_id.get(leaf_id, messages[-1]) if leaf_id is not None else messages[-1]
        ancestors = leaf.get("ancestors")
        chain = [by_id[a] for a in ancestors if a in by_id] + [leaf] if isinstance(ancestors, list) else [leaf]
    out = []
    for message in chain:
        role, content, message_id = message.get("from"), message.get("content"), message.get("id")
        if isinstance(role, str) and isinstance(content, str):
            out.append({"role": role, "content": content, "id": message_id if isinstance(message_id, str) else ""})
    return out


def siblings(messages: Sequence[Mapping[str, Any]], message_id: str) -> list[Mapping[str, Any]]:
    """The messages at the same place as ``message_id`` in a tree (it included), oldest first.

    They are its parent's ``children``: the versions an edit or a regenerate made.
    """
    by_id = {m.get("id"): m for m in messages}
    message = by_id.get(message_id)
    ancestors = message.get("ancestors") if message is not None else None
    if message is None:
        return []
    if not isinstance(ancestors, list) or not ancestors or ancestors[-1] not in by_id:
        return [message]
    children = by_id[ancestors[-1]].get("children")
    if not isinstance(children, list):
        return [message]
    return [by_id[c] for c in children if c in by_id]


def latest_leaf(messages: Sequence[Mapping[str, Any]], message_id: str) -> str:
    """The end of the newest line below ``message_id``: its last child's last child, and so on."""
    by_id = {m.get("id"): m for m in messages}
    current = message_id
    for _ in range(len(messages)):  # bounded: a cycle in bad data cannot loop forever
        children = by_id.get(current, {}).get("children")
        if not isinstance(children, list) or not children or children[-1] not in by_id:
            break
        current = children[-1]
    return current


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
