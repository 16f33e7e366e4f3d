"""What every chat-ui family shares: the routes, the conversation id, the prompt text; no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from .._exceptions import ProtocolError

DEFAULT_BASE_URL = "https://gpt-gm.h2o.ai"
DEFAULT_MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"

SETTINGS_PATH = "/settings"
CONVERSATION_PATH = "/conversation"

_ROLES = ("system", "user", "assistant")

Messages = str | Sequence[Mapping[str, str]]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str, raw: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, as a UTF-8 decoder replaces bad bytes.

    JSON can carry them (``"\\ud800"`` is valid JSON) but no encoder can write
    them, so one would break the caller's ``print()`` (issue 18.3). Only a
    ``\\u`` escape in ``raw``, the JSON it came from, can make one, and only in
    a text that is not ASCII: for an ASCII token (``isascii()`` reads a flag)
    the per-token path pays nothing more.
    """
    if text.isascii() or "\\u" not in raw:
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def conversation_path(conversation_id: str) -> str:
    # The id is the server's: quoted, so that it stays one path segment whatever it holds.
    return f"{CONVERSATION_PATH}/{quote(conversation_id, safe='')}"


def stop_generating_path(conversation_id: str) -> str:
    return conversation_path(conversation_id) + "/stop-generating"


def create_payload(model: str) -> dict[str, str]:
    """The JSON body of ``POST /conversation``."""
    return {"model": model}


def parse_conversation_id(body: Any) -> str:
    """The conversation id from the answer to ``POST /conversation``.

    Raises:
        ProtocolError: The answer has no string ``conversationId``.
    """
    if isinstance(body, Mapping):
        conversation_id = body.get("conversationId")
        if isinstance(conversation_id, str) and conversation_id:
            return conversation_id
    raise ProtocolError(f"the server's answer has no conversationId: {str(body)[:200]!r}")


def check_text(text: str, what: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (a lone surrogate, e.g. from a bad decode).

    Raises:
        ValueError: Naming where the bad character is.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds a lone surrogate ({text[exc.start]!r} at index {exc.start}), which is not "
            "valid Unicode text and cannot be sent"
        ) from None


def format_prompt(messages: Messages) -> str:
    """Flatten messages into one prompt, exactly like the seed (protocol.md 4).

    A ``str`` is one user message. A single message is sent as its content
    unchanged; several become ``"<Role>: <content>"`` lines followed by
    ``"\\nAssistant:"``. The caller's list is only read.

    Raises:
        TypeError: ``messages`` is not a string or a sequence of mappings, or
            a role or content is not a string.
        ValueError: The list is empty, a message lacks ``role`` or
            ``content``, a role is unknown, or the prompt is blank.
    """
    if isinstance(messages, str):
        prompt = messages
    elif isinstance(messages, (bytes, bytearray)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a str or a sequence of {'role': ..., 'content': ...} mappings, "
            f"not {type(messages).__name__}"
        )
    elif not messages:
        raise ValueError("messages is empty: give at least one message")
    else:
        pairs = [_role_and_content(index, message) for index, message in enumerate(messages)]
        if len(pairs) == 1:
            prompt = pairs[0][1]
        else:
            lines = [f"{role.capitalize()}: {content}" for role, content in pairs]
            prompt = "\n".join(lines) + "\nAssistant:"
    if not prompt.strip():
        raise ValueError("the prompt is blank: chat-ui rejects blank inputs")
    check_text(prompt, "the prompt")
    return prompt


def _role_and_content(index: int, message: object) -> tuple[str, str]:
    if not isinstance(message, Mapping):
        raise TypeError(f"messages[{index}] must be a mapping with 'role' and 'content', not {type(message).__name__}")
    missing = [key for key in ("role", "content") if key not in message]
    if missing:
        raise ValueError(f"messages[{index}] has no {' or '.join(repr(k) for k in missing)}")
    role, content = message["role"], message["content"]
    if not isinstance(role, str):
        raise TypeError(f"messages[{index}]['role'] must be a str, not {type(role).__name__}")
    if not isinstance(content, str):
        raise TypeError(f"messages[{index}]['content'] must be a str, not {type(content).__name__}")
    if role not in _ROLES:
        raise ValueError(f"messages[{index}]['role'] is {role!r}; expected one of {', '.join(_ROLES)}")
    return role, content


def split_system(messages: Messages) -> tuple[str | None, Messages]:
    """The leading system messages as one preprompt, and the rest (for families with ``preprompt``).

    A lone system message stays where it is: a prompt must have a user part.
    """
    if isinstance(messages, str) or not isinstance(messages, Sequence) or isinstance(messages, (bytes, bytearray)):
        return None, messages
    count = 0
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "system":
            count += 1
        else:
            break
    if count == 0 or count == len(messages):
        return None, messages
    system = [_role_and_content(i, m)[1] for i, m in enumerate(messages[:count])]
    return "\n".join(system), messages[count:]
