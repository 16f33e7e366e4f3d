"""What a chat-ui server sends besides tokens, as plain frozen values (:meth:`Stream.events`).

chat-ui from 0.7 on streams typed ``MessageUpdate`` objects (protocol-eras.md
3.4, 5, 6, 8): tokens, statuses, titles, web-search progress and sources,
tool calls and results, reasoning, files and the router's choice. Each kind
has a class here; an update type this SDK does not know (a newer release's)
arrives as :class:`Unknown` with its raw object, so a new type never breaks
a reply. The reading of the wire lives in ``_protocol/_updates.py``.

Every class has a ``raw`` attribute: the update as the server sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._types import Token

__all__ = [
    "Event", "File", "Reasoning", "RouterMetadata", "Status", "Title", "ToolCall", "ToolError", "ToolResult",
    "Unknown", "WebSearch",
]


@dataclass(frozen=True, slots=True)
class Status:
    """A ``status`` update: ``"started"``, ``"title"`` (0.7, 0.8), ``"keepAlive"`` (0.9 on), ``"finished"`` (0.10).

    An error status is never an event: it ends the stream with :class:`GenerationError`.

    Attributes:
        status: The status, as the server names it.
        message: Its message, where it has one (the title, for ``"title"``).
    """

    status: str
    message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Title:
    """The conversation's title, as the server named it (every family from 0.7 on).

    In 0.7 and 0.8 it follows the ``Status("title")`` it came as.
    """

    title: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class WebSearch:
    """Web-search progress (``web_search=True``, chat-ui 0.7-0.9).

    Attributes:
        kind: ``"update"`` (a step, such as ``"Searching Google"``),
            ``"sources"``, ``"error"`` (the search failed; the reply still
            comes, without sources) or ``"finished"`` (0.9).
        message: The step's text, where it has one.
        args: The step's arguments (the query, a URL, the error's text).
        sources: For ``"sources"``: ``{"title", "url"}`` dicts.
    """

    kind: str
    message: str | None = None
    args: tuple[str, ...] = ()
    sources: tuple[Mapping[str, str], ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model calls a tool the server runs (0.9 tools, 0.10 MCP).

    Attributes:
        uuid: The call's id; its :class:`ToolResult` or :class:`ToolError` carries it.
        name: The tool's name.
        parameters: The arguments.
    """

    uuid: str
    name: str
    parameters: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool call's result, as the server ran it.

    Attributes:
        uuid: The call's id.
        status: ``"success"`` or ``"error"``, as the server says.
        outputs: What the tool returned.
    """

    uuid: str
    status: str | None
    outputs: tuple[Any, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ToolError:
    """A tool call that failed on the server."""

    uuid: str
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reasoning:
    """The model's reasoning (0.9.4 on): a piece of its text, or a status line.

    Attributes:
        kind: ``"stream"`` (``text`` is a piece of the reasoning) or ``"status"``.
        text: The piece, or the status.
    """

    kind: str
    text: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class File:
    """A file the server made for the reply (a tool's output), served at ``/conversation/{id}/output/{sha}``."""

    name: str
    sha: str
    mime: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RouterMetadata:
    """Which model the server's router chose (0.10 with a router)."""

    route: str | None
    model: str | None
    provider: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Unknown:
    """An update this SDK does not know (a newer release's, or a tool's progress): its type and raw object."""

    type: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


#: Anything :meth:`Stream.events` yields.
Event = (Token | Status | Title | WebSearch | ToolCall | ToolResult | ToolError | Reasoning | File | RouterMetadata
         | Unknown)
