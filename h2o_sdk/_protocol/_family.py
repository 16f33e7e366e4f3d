"""What a wire family is: the differences between chat-ui eras a client must know, as data.

Each family module (``v0_4`` ... ``v0_10``) makes one :class:`Family`; the
registry in ``__init__`` lists them. The client asks its family what to send
and how to read; it never tests a family's name.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import UnsupportedError

__all__ = ["Family", "Prompt", "multipart_body"]


@dataclass(frozen=True)
class Prompt:
    """One message to send, before the family shapes it.

    Attributes:
        inputs: The user text (``None`` for a regenerate in a tree family).
        message_id: The user message's own id (``"0.4"``, ``"0.7"``: the
            client chooses it; with ``is_retry``, the message to replace).
        parent_id: The message to answer under (tree families: the root after
            create, the last reply after each turn; with ``is_retry``, the
            reply to regenerate).
        is_retry: Regenerate.
        parameters: Generation parameters (``"0.4"`` only).
    """

    inputs: str | None
    message_id: str | None = None
    parent_id: str | None = None
    is_retry: bool = False
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Family:
    """A chat-ui wire family (protocol-eras.md, the table at the top).

    Attributes:
        name: What ``protocol=`` takes: ``"0.4"`` ... ``"0.10"``.
        releases: The chat-ui releases that speak it (for messages and docs).
        stream: ``"sse"`` (TGI server-sent events) or ``"jsonl"`` (chat-ui's updates).
        settings: How the welcome modal is accepted: ``"form"``, ``"json"``, or
            ``None`` (no gate).
        multipart: The message goes as a ``multipart/form-data`` ``data`` part.
        tree: Messages form a tree: ``id`` is the parent, the conversation
            starts with a system root.
        preprompt: The create body takes a ``preprompt`` (a system message).
        read_back: Where the stored messages are read: ``"page"`` (SvelteKit's
            ``__data.json``) or ``"api2"`` (``/api/v2/conversations/{id}``).
        models: The route that lists models (``None``: there is none).
        superjson: ``/api/v2`` answers are superjson ``{"json": ...}``.
        ends: The body ends after the last update (``"0.7"``'s never does).
        stop_ends_reply: Stop-generating ends the reply (``"0.8"``, ``"0.9"``
            ignore it, a chat-ui bug: the client cuts its own connection).
        delete_all: How every conversation of the session is deleted: ``"form"``
            (the settings page's ``POST /conversations?/delete``) or ``"api2"``
            (``DELETE /api/v2/conversations``, which says how many).
        patch_model: ``PATCH /conversation/{id}`` takes ``{"model"}`` (v0.9.3 on).
        listing: Where the session's conversations are listed: ``"layout"``
            (the root ``__data.json``), ``"api"`` (``/api/conversations``) or
            ``"api2"`` (``/api/v2/conversations``).
        session_settings: Where no gate exists, the settings POST of the
            welcome modal, which makes a new session and changes nothing else
            (``Client.connect()``); ``None`` where the gate's acceptance does.
    """

    name: str
    releases: str
    stream: str
    settings: str | None
    multipart: bool
    tree: bool
    preprompt: bool
    read_back: str
    models: str | None
    superjson: bool
    ends: bool
    stop_ends_reply: bool
    listing: str = "layout"
    delete_all: str = "form"
    patch_model: bool = False
    session_settings: str | None = None

    def check_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Refuse generation parameters this family cannot send (``"0.4"`` overrides this).

        Raises:
            UnsupportedError: Naming the parameters and the family.
        """
        if parameters:
            names = ", ".join(sorted(parameters))
            raise UnsupportedError(
                f"chat-ui {self.releases} (protocol {self.name!r}) takes no generation parameters: the server's "
                f"model configuration decides them; remove {names}"
            )

    def body(self, prompt: Prompt) -> dict[str, Any]:
        """The message's JSON (the ``data`` part when :attr:`multipart`)."""
        raise NotImplementedError

    def settings_body(self, model: str) -> Any:
        """The body that accepts the welcome modal (a form dict or JSON)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.name} (chat-ui {self.releases})"


def multipart_body(data: Mapping[str, Any]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one ``data`` field, and its content type (protocol-eras.md 6)."""
    boundary = f"----h2o-sdk-{uuid.uuid4().hex}"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{text}\r\n--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"
