"""What a wire family is: the differences between chat-ui eras a client must know, as data.

Each family module (``v0_4`` ... ``v0_10``) makes one :class:`Family`; the
registry in ``__init__`` lists them. The client asks its family what to send
and how to read; it never tests a family's name.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import UnsupportedError

__all__ = ["Attachment", "Family", "Prompt", "multipart_body"]


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message (``files=``): its name, bytes and MIME type."""

    name: str
    data: bytes
    mime: str

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


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
        is_retry: Regenerate (no ``inputs``), or edit the user message
            ``parent_id`` names (with ``inputs``).
        is_continue: Extend the reply ``parent_id`` names (``"0.8"``, ``"0.9"``).
        parameters: Generation parameters (``"0.4"`` only).
        web_search: Run the server's web search first.
        files: Files to attach.
        generation_id: The client's name for the generation (``"0.10"``: chat-ui
            HEAD follows it again after a dropped connection; v0.10.0 ignores it).
    """

    inputs: str | None
    message_id: str | None = None
    parent_id: str | None = None
    is_retry: bool = False
    parameters: Mapping[str, Any] | None = None
    is_continue: bool = False
    web_search: bool = False
    files: tuple[Attachment, ...] = ()
    generation_id: str | None = None


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
        web_search: The message's ``web_search`` switch runs the server's
            search (0.7-0.9; 0.10 ignores it).
        files: How files go with a message: ``"base64"`` (a JSON list of
            base64 strings, 0.7 and 0.8), ``"parts"`` (multipart ``files``
            parts named ``base64;<name>``, 0.9 on) or ``None`` (0.4 takes none).
        continues: ``is_continue`` extends the last reply (0.8, 0.9; v0.7
            predates it and v0.10 ignores it).
        continue_whole: The ``finalAnswer`` of a continue is the whole
            message (0.8), not only the new text (0.9).
        generation_id: The message names its generation (``generationId``,
            chat-ui HEAD; harmless to v0.10.0, which ignores unknown keys).
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
    web_search: bool = False
    files: str | None = None
    continues: bool = False
    continue_whole: bool = False
    generation_id: bool = False

    def check_options(self, *, web_search: bool = False, files: bool = False, is_continue: bool = False,
                      edit: bool = False) -> None:
        """Refuse what this family's releases cannot do, before any request is sent for it.

        Raises:
            UnsupportedError: Naming the option, the family and where it works.
        """
        where = f"chat-ui {self.releases} (protocol {self.name!r})"
        if web_search and not self.web_search:
            raise UnsupportedError(f"{where} has no web-search switch (web_search=True works with 0.7 to 0.9)")
        if files and self.files is None:
            raise UnsupportedError(f"{where} takes no files with a message (files= works from 0.7 on)")
        if is_continue and not self.continues:
            raise UnsupportedError(f"{where} cannot continue a reply (continue_() works with 0.8 and 0.9)")
        if edit and not self.tree:
            raise UnsupportedError(f"{where} keeps no message tree to edit or branch (0.8 on)")

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


def multipart_body(data: Mapping[str, Any], files: tuple[Attachment, ...] = ()) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body: the ``data`` field, then one ``files`` part per file; and its content type.

    Each file goes as the web UI sends it (protocol-eras.md 6): its filename
    is ``base64;<name>``, its content the base64 text, its type the MIME type.
    """
    boundary = f"----h2o-sdk-{uuid.uuid4().hex}"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{text}\r\n"]
    for file in files:
        # Quotes and line breaks escaped as browsers do (HTML, multipart/form-data encoding algorithm).
        name = file.name.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")
        mime = file.mime.replace("\r", "").replace("\n", "")
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"base64;{name}\"\r\n"
                     f"Content-Type: {mime}\r\n\r\n{file.base64()}\r\n")
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"
