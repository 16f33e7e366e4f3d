"""How the emulated chat-ui families from 0.7 on differ: a table of data per release.

Each family's module (``_v07`` ... ``_v010``) fills one :class:`Era`;
``_jsonl``'s one writer and router read it. The tables import nothing but
this module, so the data never depends on the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Era"]


@dataclass(frozen=True)
class Era:
    """How one chat-ui family differs from the others (the attributes name the capture that shows each)."""

    name: str
    gate: bool  # the 405 welcome gate (conv_create_before_accept)
    settings_path: str  # where the settings JSON goes (settings_accept)
    csrf: str  # "referer" (0.7) or "origin" (0.8 on): csrf_form_*
    tree: bool  # parent ids and a system root (conv_read_after_retry)
    multipart: bool  # the message is a multipart "data" part (msg_json_instead_of_form)
    bad_model_status: int  # conv_create_bad_model: 500 (0.7) or 400 "Invalid request"
    new_errors: bool  # 500 bodies {"message": "An error occurred", "errorId"} (0.8 on)
    content_type: str | None  # msg_send: none (0.7), text/event-stream, application/jsonl (0.10)
    title: str  # "status" (0.7, 0.8), "late" (0.9: from the model, after the tokens), "early" (0.10)
    regroup: int | None  # 0.8: tokens regrouped into pieces of this many characters
    pad: int | None  # 0.9 on: tokens padded with U+0000 to this many characters
    keepalive: bool  # 0.9 on: keepAlive updates while waiting
    interrupted: bool  # finalAnswer carries "interrupted" (0.9 on)
    finished: bool  # 0.10: {"status": "finished"} after the padding
    ends: bool  # the response ends after the padding (0.7's never does)
    after_error: str  # upstream_*: "prompt" (0.7), "so-far" (0.8), "nothing" (0.9 on)
    stop: str  # msg_stream_stopped: "final" (0.7, 0.10) or "ignored" (0.8, 0.9)
    api: bool  # /api/models, /api/conversations, /api/conversation/{id} (0.8 on)
    api2: bool  # /api/v2/* in superjson (0.10)
    page_type: str | None  # __data.json's content type; None: it holds no messages (0.10)
    catch_all: bool  # unknown GETs answer the app page with 200 (0.9)
    upstream_status: bool  # 0.10: "<status> <message>" and statusCode; retries first
    prompt_format: str  # "h2ogpt" (0.7 honours the model's tokens) or "chatml" (0.8 on)
    model_extra: tuple[str, ...] = ()  # api_api_models: keys beyond v0.8.4's, each False
    summary_extra: tuple[str, ...] = ()  # api_api_conversations: keys beyond v0.8.4's
    message_updates: bool = False  # api_api_conversation_id: messages carry their "updates"
    patch_model: bool = False  # PATCH /conversation/{id} takes {"model"} (v0.9.3 on)
    search: str | None = None  # web_search: the key naming a webSearch step, "messageType" (0.7, 0.8) or "subtype"
    search_error: str = ""  # the search's error update's message without an engine (runWebSearch)
    files: str | None = None  # "base64" (a JSON list of base64 images, <2MB and 224x224) or "parts" (<10MB)
    continues: bool = False  # is_continue extends the last reply (0.8, 0.9)
    continue_whole: bool = False  # a continue's finalAnswer is the whole message (0.8), not the new text (0.9)
    body_limit: int = 15 * 1024 * 1024  # adapter-node's BODY_SIZE_LIMIT: 512 KiB by default (0.7, 0.8), 15 MiB after
    extras: tuple[str, ...] = ()  # what the release's updates can carry besides text: tool, file, reasoning, router
