"""chat-ui's own stream, one JSON ``MessageUpdate`` per line (every family from ``"0.7"`` on).

One lenient reader covers them all (protocol-eras.md 9.3): strip each line
(the 4096 spaces after ``finalAnswer`` carry no newline, so ``finished``
arrives glued to them), strip the U+0000 padding of tokens, take the title
from ``status: title`` (0.7, 0.8) or ``type: title`` (0.9 on), treat any
``status: error`` as the failure whatever follows it, skip what is unknown
(keepAlive, webSearch, reasoning, tool, routerMetadata, file ...) on the
token path; :func:`to_events` types them for ``Stream.events()``.
"""

from __future__ import annotations

import json
from typing import Any

from .. import _events
from .._exceptions import GenerationError, ProtocolError
from ._common import clean_text
from ._family import Prompt

__all__ = ["FINAL", "OTHER", "STREAM", "TITLE", "parse_update", "settings_json", "sources", "to_events", "tree_body"]

STREAM, FINAL, TITLE, OTHER = 0, 1, 2, 3

_raw_decode = json.JSONDecoder().raw_decode
_SHOWN = 200


def parse_update(line: str) -> tuple[int, Any]:
    """Parse one stripped, non-empty line.

    Returns:
        ``(STREAM, token text without padding)``, ``(FINAL, the finalAnswer
        object)``, ``(TITLE, (the title, the update))`` or ``(OTHER, the
        update)``.

    Raises:
        GenerationError: A ``status: error`` update (``status_code`` from its
            ``statusCode`` when the server sent one).
        ProtocolError: A line that is not a JSON update.
    """
    try:
        update, end = _raw_decode(line)  # this runs once per token: no whitespace scans
        if end != len(line):
            raise ValueError("extra data after the JSON value")
    except (ValueError, RecursionError) as exc:
        hint = ""
        if line.startswith(("data:", "event:", ":")):
            hint = "; it looks like server-sent events, as chat-ui 0.4 sends (try protocol='auto' or '0.4')"
        raise ProtocolError(f"a stream line is not a JSON update: {line[:_SHOWN]!r}{hint}") from exc
    if not isinstance(update, dict):
        raise ProtocolError(f"a stream line is not a JSON update: {line[:_SHOWN]!r}")
    kind = update.get("type")
    if kind == "stream":
        token = update.get("token")
        if not isinstance(token, str):
            raise ProtocolError(f"a stream update without a token: {line[:_SHOWN]!r}")
        piece = token.rstrip("\x00")
        return STREAM, piece if piece.isascii() else clean_text(piece, line)
    if kind == "finalAnswer":
        text = update.get("text")
        if not isinstance(text, str):
            raise ProtocolError(f"a finalAnswer without its text: {line[:_SHOWN]!r}")
        return FINAL, update if text.isascii() else {**update, "text": clean_text(text, line)}
    if kind == "status":
        status = update.get("status")
        if status == "error":
            message = update.get("message")
            code = update.get("statusCode")
            raise GenerationError(
                message if isinstance(message, str) and message else "the server reported an error",
                status_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            )
        if status == "title" and isinstance(update.get("message"), str):
            return TITLE, (clean_text(update["message"], line), update)
        return OTHER, update
    if kind == "title":
        title = update.get("title")
        return (TITLE, (clean_text(title, line), update)) if isinstance(title, str) else (OTHER, update)
    if not isinstance(kind, str):
        # A JSON body where a stream was expected: {"message": ...} from a route error.
        raise ProtocolError(f"the server sent JSON that is not a stream update: {line[:_SHOWN]!r}")
    return OTHER, update


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def sources(items: Any, key: str = "link") -> tuple[dict[str, str], ...]:
    """``{"title", "url"}`` dicts from webSearch ``sources`` (``link``) or finalAnswer ``webSources`` (``uri``)."""
    if not isinstance(items, list):
        return ()
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            out.append({"title": _str(item.get("title")) or "", "url": item[key]})
    return tuple(out)


def to_events(update: dict[str, Any], title: str | None = None) -> list[_events.Event]:
    """The typed events of one update that is neither a token nor the finalAnswer (``Stream.events()``).

    Args:
        update: The parsed update.
        title: The cleaned title, for a title update.

    Returns:
        Usually one event; ``status: title`` (0.7, 0.8) is a :class:`Status` and a :class:`Title`.
    """
    kind = update.get("type")
    subtype = update.get("subtype")
    if kind == "status":
        status = _str(update.get("status")) or ""
        event = _events.Status(status, _str(update.get("message")), raw=update)
        return [event, _events.Title(title, raw=update)] if title is not None else [event]
    if kind == "title" and title is not None:
        return [_events.Title(title, raw=update)]
    if kind == "webSearch":
        # 0.7 and 0.8 say messageType, 0.9 subtype (protocol-eras.md 5).
        step = _str(subtype) or _str(update.get("messageType")) or "update"
        args = update.get("args")
        return [_events.WebSearch(
            step, _str(update.get("message")),
            tuple(a for a in args if isinstance(a, str)) if isinstance(args, list) else (),
            sources(update.get("sources")), raw=update)]
    if kind == "tool":
        uuid = _str(update.get("uuid")) or ""
        if subtype == "call" and isinstance(call := update.get("call"), dict):
            parameters = call.get("parameters")
            return [_events.ToolCall(uuid, _str(call.get("name")) or "",
                                     parameters if isinstance(parameters, dict) else {}, raw=update)]
        if subtype == "result" and isinstance(result := update.get("result"), dict):
            outputs = result.get("outputs")
            return [_events.ToolResult(uuid, _str(result.get("status")),
                                       tuple(outputs) if isinstance(outputs, list) else (), raw=update)]
        if subtype == "error":
            return [_events.ToolError(uuid, _str(update.get("message")) or "", raw=update)]
    if kind == "reasoning" and subtype in ("stream", "status"):
        text = update.get("token" if subtype == "stream" else "status")
        return [_events.Reasoning(subtype, text.rstrip("\x00") if isinstance(text, str) else "", raw=update)]
    if kind == "file" and isinstance(update.get("sha"), str):
        return [_events.File(_str(update.get("name")) or "", update["sha"], _str(update.get("mime")), raw=update)]
    if kind == "routerMetadata":
        return [_events.RouterMetadata(_str(update.get("route")), _str(update.get("model")),
                                       _str(update.get("provider")), raw=update)]
    return [_events.Unknown(kind if isinstance(kind, str) else "", raw=update)]


def settings_json(model: str) -> dict[str, Any]:
    """The JSON ``POST /settings`` of v0.7-v0.9, as their front end sends it (settings_accept captures).

    It resets the session's other settings to their defaults, which is what a
    new anonymous session has anyway.
    """
    return {
        "shareConversationsWithModelAuthors": True,
        "hideEmojiOnSidebar": False,
        "ethicsModalAcceptedAt": None,
        "activeModel": model,
        "customPrompts": {},
        "recentlySaved": False,
        "ethicsModalAccepted": True,
    }


def tree_body(prompt: Prompt) -> dict[str, Any]:
    """The fields every tree family's message takes (protocol-eras.md 9.4).

    A regenerate sends the reply's id and no ``inputs``, as the retry button does (``msg_retry``).
    """
    body: dict[str, Any] = {}
    if prompt.inputs is not None:
        body["inputs"] = prompt.inputs
    body["id"] = prompt.parent_id
    body["is_retry"] = prompt.is_retry
    body["is_continue"] = prompt.is_continue
    if prompt.generation_id is not None:
        body["generationId"] = prompt.generation_id
    return body
