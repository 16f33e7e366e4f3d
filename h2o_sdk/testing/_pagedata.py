"""SvelteKit's page data, ``GET /conversation/{id}/__data.json``, as chat-ui 0.4-0.9 answer it.

The body is ``{"type":"data","nodes":[<layout>, <page>]}``; each node's data is
devalue's flat array: item 0 is the root, containers hold the indexes of their
values, equal primitives share one index, and a date is ``["Date", iso]``
(captures ``conv_read_after_*`` of v0.7-v0.9.4; the 0.4 page checked on loopback).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._store import dumps

__all__ = ["Date", "error_document", "page_document"]


class Date(str):
    """A string devalue writes as a date."""


def flatten(value: Any) -> list[Any]:
    """devalue's ``stringify`` without the outer JSON: the flat array."""
    values: list[Any] = []
    seen: dict[Any, int] = {}

    def index_of(item: Any) -> int:
        key = (type(item).__name__, item) if isinstance(item, (str, int, float, bool)) or item is None else id(item)
        if key in seen:
            return seen[key]
        position = len(values)
        seen[key] = position
        values.append(None)
        if isinstance(item, Date):
            values[position] = ["Date", str(item)]
        elif isinstance(item, Mapping):
            values[position] = {k: index_of(v) for k, v in item.items()}
        elif isinstance(item, (list, tuple)):
            values[position] = [index_of(v) for v in item]
        else:
            values[position] = item
        return position

    index_of(value)
    return values


def page_document(layout: Mapping[str, Any], page: Mapping[str, Any], dependency: str) -> bytes:
    """The whole ``__data.json`` body for a conversation page."""
    nodes = [
        {"type": "data", "data": flatten(layout), "uses": {"dependencies": ["conversation:list"]}},
        {"type": "data", "data": flatten(page), "uses": {"dependencies": [dependency], "params": ["id"]}},
    ]
    return dumps({"type": "data", "nodes": nodes})


def layout_document(layout: Mapping[str, Any]) -> bytes:
    """``GET /__data.json``: the app's root layout data, which lists the session's conversations."""
    nodes = [{"type": "data", "data": flatten(layout), "uses": {"dependencies": ["conversation:list"]}}]
    return dumps({"type": "data", "nodes": nodes})


def error_document(status: int, message: str) -> bytes:
    """A missing or foreign conversation: 200, with the page node an error (SvelteKit's way)."""
    nodes = [{"type": "data", "data": flatten({}), "uses": {}},
             {"type": "error", "error": {"message": message}, "status": status}]
    return dumps({"type": "data", "nodes": nodes})
