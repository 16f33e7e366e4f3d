"""chat-ui from 0.7 on: the hook, the routes and the JSON-lines stream writer every later family shares.

What differs between the releases is a table, :class:`Era`, one per family
module (``_v07`` ... ``_v010``), each row read off the captures of the real
release (``shared/captures/chat-ui-<tag>/``) and ``shared/protocol-eras.md``.
Where the real server has a bug clients must survive, the emulator has it
too: 0.7 never ends a response, 0.8 and 0.9 ignore stop-generating, 0.7 and
0.8 send a ``finalAnswer`` after an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import _v010, _v07, _v08, _v09
from ._era import Era
from ._extras import Upload, check_uploads, marker_updates, read_uploads, stored_files, web_search
from ._head import Run, clamp, replay
from ._head import headers as replay_headers
from ._http import BodyWriter, ConversationRoutes, Handler
from ._pagedata import Date, error_document, layout_document, page_document
from ._replies import default_reply, tokenize
from ._store import (
    CONV_ID,
    LOGIN,
    NOT_FOUND,
    RATE_LIMITED,
    TGI_BODIES,
    UUID,
    WELCOME,
    Conversation,
    Fault,
    Session,
    cookie_value,
    dumps,
    marker_fault,
    marker_reply,
    now_iso,
)
from ._upstream import Call, Request, openai_request, tgi_request

__all__ = ["ERAS", "handler_for"]

logger = logging.getLogger("h2o_sdk.testing")

#: Each family's table, by the name ``serve(protocol=...)`` takes: data for the one writer here.
ERAS: dict[str, Era] = {era.name: era for era in (_v07.ERA, _v08.ERA, _v09.ERA, _v010.ERA)}

_PADDING = b" " * 4096  # after finalAnswer, without a newline (to flush browser buffers)
_STARTED = {"type": "status", "status": "started"}
_KEEPALIVE = {"type": "status", "status": "keepAlive"}
_FINISHED = {"type": "status", "status": "finished"}
_GATE_EXEMPT = ("/settings", "/login", "/admin")
_LOGIN_EXEMPT = ("/login", "/admin", "/settings")
_CORS = {
    "access-control-allow-headers": "Content-Type, Authorization",
    "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "access-control-allow-origin": "*",
}
#: The OpenAI SDK's messages for upstream statuses, as chat-ui 0.10 passes them on (captures).
_OPENAI_MESSAGES = {429: "Rate limit reached. Please try again later."}


def handler_for(protocol: str) -> type[Handler]:
    """The request handler class of a family from 0.7 on."""
    era = ERAS[protocol]
    return type(f"Handler{era.name.replace('.', '')}", (JsonLinesHandler,), {"era": era})


class JsonLinesHandler(ConversationRoutes):
    """The hook and routes of chat-ui 0.7 and later; :attr:`era` says which."""

    era: Era
    cookie_lifetime = 14 * 24 * 3600.0  # two weeks, set by POST answers only (settings_accept)
    cookie_on_post_only = True
    default_keepalive = 0.1  # keepAlive about every 100 ms (0.9 on)

    # -- errors, as this release words them ------------------------------------

    @property
    def patches_model(self) -> bool:  # type: ignore[override]
        return self.era.patch_model

    @property
    def stop_ignored(self) -> bool:  # type: ignore[override]
        return self.era.stop == "ignored"  # 0.8, 0.9: AbortedGenerations never fills its list (a chat-ui bug)

    def _internal(self) -> None:
        if self.era.new_errors:
            return self._route_error(500, {"message": "An error occurred", "errorId": str(uuid.uuid4())})
        return self._route_error(500, {"message": "Internal Error"})

    def _not_found_page(self) -> None:
        if self.era.catch_all and self.command in ("GET", "HEAD"):
            return self._svelte_page(200, "HuggingChat")
        return self._svelte_page(404, "Not Found", "<h1>404</h1><p>Not Found</p>")

    # -- the hook --------------------------------------------------------------

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.era.body_limit:
            # adapter-node's BODY_SIZE_LIMIT, before chat-ui sees the request (v0.7, v0.8.4 production
            # builds on loopback: 512 KiB by default; 0.9 on ship 15 MiB in their .env and Dockerfile).
            while length > 0:
                length -= len(self.rfile.read(min(length, 1 << 16)) or b"x" * length)
            self.close_connection = True
            return self._send(413, b"Invalid request body", cookie=False)
        body = self._read_body()
        path = self._app_path()
        cookie = cookie_value(self.headers.get("Cookie"))
        self._session_id = cookie or str(uuid.uuid4())
        app, era = self.app, self.era
        if path is None:
            return self._outside_app()
        if self._csrf_refused(era.csrf):
            return None
        writes = self.command not in ("GET", "HEAD", "OPTIONS")
        if app.require_login and not app._logged_in(cookie):
            if era.upstream_status and self.command == "POST" and path == "/conversation":
                # 0.10 sends anonymous visitors of paths off its allow-list to the identity provider.
                location = "https://login.invalid/oauth/authorize?client_id=chat-ui&response_type=code"
                return self._send(302, headers={"location": location}, cookie=False, chunked=True)
            if writes and not path.startswith(_LOGIN_EXEMPT):
                return self._hook_error(401, LOGIN)
        with app._lock:
            session = app._sessions.get(self._session_id)
        gated = writes and not path.startswith(_GATE_EXEMPT)
        if era.gate and gated and app.require_welcome and not app.require_login and not (session and session.accepted):
            return self._hook_error(405, WELCOME)
        try:
            self._route(path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _route(self, path: str, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        method, era = self.command, self.era
        if method == "POST" and path in ("/settings", era.settings_path):
            return self._settings(body)
        if method == "POST" and parts == ["conversation"]:
            return self._create(body)
        if method == "POST" and parts == ["conversations"] and not era.api2:
            return self._delete_all_action()
        if method == "DELETE" and parts == ["api", "v2", "conversations"] and era.api2:
            return self._superjson(self._delete_all())  # how many it deleted
        if method in ("GET", "HEAD"):
            if not parts:
                return self._svelte_page(200, "HuggingChat")
            if parts == ["__data.json"] and era.page_type is not None:
                return self._layout_data()
            if parts == ["healthcheck"] and era.api:
                return self._send(200, b"OK", content_type="text/plain;charset=UTF-8")
            if parts[0] == "api" and (era.api or era.api2):
                return self._api(parts[1:])
        if len(parts) >= 2 and parts[0] == "conversation":
            conversation_id, rest = parts[1], parts[2:]
            if method in ("GET", "HEAD") and rest == ["__data.json"]:
                return self._page_data(conversation_id)
            if method in ("GET", "HEAD") and not rest:
                return self._page(conversation_id)
            if method == "GET" and rest == ["stream"] and self.app.head:
                return self._replay(conversation_id)
            if method in ("GET", "HEAD") and rest == ["stop-generating"]:
                return self._send(405, b"GET method not allowed", content_type="text/plain;charset=UTF-8",
                                  headers={"allow": "POST"})
            if method in ("GET", "HEAD"):
                return self._not_found_page()  # no such route
            if not CONV_ID.match(conversation_id):
                return self._internal()  # new ObjectId() throws
            if self._conversation_write(conversation_id, rest, body):
                return None
        return self._not_found_page()

    def _step_fault(self, step: str) -> bool:
        fault = self.app._fault(step)
        status = fault.status if fault is not None else None
        body = {"message": RATE_LIMITED} if status == 429 else (
            NOT_FOUND if status == 404 else {"message": "An error occurred"})
        return self._answer_fault(fault, body)

    # -- settings, create --------------------------------------------------------

    def _settings(self, body: bytes) -> None:
        app = self.app
        if self._step_fault("settings"):
            return None
        try:
            settings = json.loads(body)
            if not isinstance(settings, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            return self._internal()  # a form body fails at request.json()
        model = settings.get("activeModel") or app.models[0]
        if not isinstance(model, str) or model not in app.models:
            return self._internal()
        with app._lock:
            session = app._sessions.setdefault(self._session_id, Session())
            session.accepted = bool(settings.get("ethicsModalAccepted") or settings.get("welcomeModalSeen"))
            session.active_model = model
        headers = _CORS if self.era.api2 and self._app_path() == self.era.settings_path else None
        self._send(200, chunked=True, headers=headers)

    def _create(self, body: bytes) -> None:
        app, era = self.app, self.era
        if self._step_fault("create"):
            return None
        try:
            payload = json.loads(body)
            model = payload["model"]
        except (ValueError, KeyError, TypeError):
            return self._internal()
        preprompt = payload.get("preprompt") if isinstance(payload, dict) else None
        if not isinstance(model, str) or model not in app.models or (
            preprompt is not None and not isinstance(preprompt, str)
        ):
            if era.bad_model_status == 400:
                return self._json(400, {"message": "Invalid request"})
            return self._internal()
        conversation_id = secrets.token_hex(12)
        conversation = Conversation(conversation_id, self._session_id, model, "New Chat",
                                    preprompt=preprompt or app.preprompt, updated=now_iso())
        if era.tree:
            root: dict[str, Any] = {"id": str(uuid.uuid4()), "from": "system", "content": conversation.preprompt,
                    "createdAt": conversation.updated, "updatedAt": conversation.updated, "children": [],
                    "ancestors": []}
            conversation.messages.append(root)
            conversation.root_id = root["id"]
        with app._lock:
            app._conversations[conversation_id] = conversation
        answer: dict[str, Any] = {"conversationId": conversation_id}
        if app.head:
            # HEAD answers with the conversation too, as GET /api/v2/conversations/{id} has it (conv_create).
            answer["conversation"] = json.dumps({"json": self._conversation_v2(conversation)}, separators=(",", ":"))
        self._json(200, answer, chunked=True)

    # -- the conversation -----------------------------------------------------------

    def _page(self, conversation_id: str) -> None:
        with self.app._lock:
            found = self.app._conversations.get(conversation_id)
        if found is None or found.session != self._session_id:
            return self._route_error(404, {"message": "Conversation not found"})
        return self._svelte_page(200, "HuggingChat")

    def _page_data(self, conversation_id: str) -> None:
        """``__data.json``: the stored messages as the page loads them (conv_read_after_* of v0.7-v0.9.4)."""
        era = self.era
        if self._step_fault("read"):
            return None
        with self.app._lock:
            found = self.app._conversations.get(conversation_id)
            messages = [dict(m) for m in found.messages] if found is not None else []
        if found is None or found.session != self._session_id or era.page_type is None:
            return self._send(200, error_document(404, "Conversation not found"), content_type="application/json")
        stored = []
        for m in messages:
            item = {key: Date(value) if key in ("createdAt", "updatedAt") else value for key, value in m.items()}
            stored.append(item)
        page: dict[str, Any] = {"messages": stored, "title": found.title, "model": found.model,
                                "preprompt": found.preprompt}
        if era.tree:
            page.update({"rootMessageId": found.root_id, "assistant": None})
        page["shared"] = False
        layout = {"conversations": [{"id": found.id, "title": found.title, "model": found.model,
                                     "updatedAt": Date(found.updated)}], "user": None}
        body = page_document(layout, page, f"{self.app.url}/conversation/conversation")
        if era.page_type == "text/sveltekit-data":
            body += b"\n"  # a streamed document: one line here, deferred chunks would follow
        self._send(200, body, content_type=era.page_type, headers={"cache-control": "private, no-store"},
                   chunked=era.page_type != "application/json")

    def _layout_data(self) -> None:
        """The root layout's data: the session's conversations, newest first (the sidebar)."""
        conversations = [{"id": c.id, "title": c.title, "model": c.model, "updatedAt": Date(c.updated)}
                         for c in self._mine()]
        self._send(200, layout_document({"conversations": conversations, "user": None}),
                   content_type="application/json", headers={"cache-control": "private, no-store"})

    # -- /api ----------------------------------------------------------------------

    def _json(self, status: int, obj: Any, **kwargs: Any) -> None:
        if self.era.api2 and (self._app_path() or "").startswith("/api/"):
            # 0.10 answers /api/* with CORS headers (for loopback origins and server-side rendering).
            kwargs["headers"] = {**_CORS, **(kwargs.get("headers") or {})}
        super()._json(status, obj, **kwargs)

    def _api(self, parts: list[str]) -> None:
        era, app = self.era, self.app
        if parts and parts[0] == "v2":
            if not era.api2:
                return self._not_found_page()
            return self._api2(parts[1:])
        if not era.api:
            return self._not_found_page()
        if parts == ["models"]:
            return self._json(200, [self._model_info(m) for m in app.models], chunked=True)
        if parts == ["conversations"]:  # 300 a page (protocol-eras.md 3.5)
            page = self._page_number()
            mine = self._mine()[page * 300:(page + 1) * 300]
            return self._json(200, [self._summary(c) for c in mine], chunked=True)
        if len(parts) == 2 and parts[0] == "conversation":
            conversation = self._owned(parts[1]) if CONV_ID.match(parts[1]) else None
            if conversation is None:
                return self._json(404, {"message": "Conversation not found"})
            keys = ("content", "from", "id", "createdAt", "updatedAt")
            messages = [{**{k: m[k] for k in keys if k in m}, **({"updates": m.get("updates", [])}
                        if self.era.message_updates else {})} for m in list(conversation.messages)]
            summary = {k: v for k, v in self._summary(conversation).items() if k not in ("_id", "model")}
            return self._json(200, {**summary, "messages": messages}, chunked=True)
        if parts == ["user"]:
            return self._json(401, {"message": "Must be signed in"})
        return self._not_found_page()

    def _api2(self, parts: list[str]) -> None:
        app = self.app
        if parts == ["feature-flags"]:
            flags = {"enableAssistants": False, "loginEnabled": app.require_login, "isAdmin": False,
                     "transcriptionEnabled": False}
            return self._superjson(flags)
        if parts == ["models"]:
            return self._superjson([self._model_info_v2(m) for m in app.models])
        if parts == ["conversations"]:  # 30 a page, and whether more follow (protocol-eras.md 8.6)
            page, mine = self._page_number(), self._mine()
            return self._superjson({"conversations": [self._summary(c) for c in mine[page * 30:(page + 1) * 30]],
                                    "hasMore": len(mine) > (page + 1) * 30})
        if len(parts) == 2 and parts[0] == "conversations":
            if self._step_fault("read"):
                return None
            conversation = self._owned(parts[1]) if CONV_ID.match(parts[1]) else None
            if conversation is None:
                return self._json(404, {"message": "Conversation not found"})
            return self._superjson(self._conversation_v2(conversation))
        if parts == ["user"]:
            return self._superjson(None)
        if parts == ["user", "settings"]:
            with app._lock:
                session = app._sessions.get(self._session_id) or Session()
            settings: dict[str, Any] = {
                "welcomeModalSeen": session.accepted, "welcomeModalSeenAt": now_iso() if session.accepted else None,
                "activeModel": session.active_model, "customPrompts": {}, "customPromptsEnabled": {},
                "shareConversationsWithModelAuthors": True, "multimodalOverrides": {}, "toolsOverrides": {},
                "providerOverrides": {}, "reasoningEffortOverrides": {}, "reasoningOverrides": {},
                "hidePromptExamples": {}, "directPaste": False, "hapticsEnabled": True, "streamingMode": "smooth",
                "billingOrganization": None,
            }
            return self._superjson(settings)
        if parts == ["public-config"]:
            names = ("PUBLIC_APPLE_APP_ID", "PUBLIC_APP_ASSETS", "PUBLIC_APP_DESCRIPTION", "PUBLIC_APP_NAME",
                     "PUBLIC_COMMIT_SHA", "PUBLIC_GOOGLE_ANALYTICS_ID", "PUBLIC_LLM_ROUTER_ALIAS_ID",
                     "PUBLIC_LLM_ROUTER_DISPLAY_NAME", "PUBLIC_LLM_ROUTER_LOGO_URL", "PUBLIC_ORIGIN",
                     "PUBLIC_PLAUSIBLE_SCRIPT_URL", "PUBLIC_SHARE_PREFIX")
            config = dict.fromkeys(names, "")
            config.update({"PUBLIC_APP_NAME": "ChatUI", "PUBLIC_APP_ASSETS": "chatui", "PUBLIC_ORIGIN": app.url})
            return self._superjson(config)
        return self._json(404, {"message": f"Page /api/v2/{'/'.join(parts)} not found"})

    def _conversation_v2(self, conversation: Conversation) -> dict[str, Any]:
        with self.app._lock:
            messages = [dict(m) for m in list(conversation.messages)]
        return {"messages": messages, "title": conversation.title, "model": conversation.model,
                "preprompt": conversation.preprompt, "rootMessageId": conversation.root_id, "id": conversation.id,
                "updatedAt": conversation.updated, "modelId": conversation.model, "shared": False}

    def _replay(self, conversation_id: str) -> None:
        """HEAD's ``GET /conversation/{id}/stream``: a run replayed and followed as server-sent events."""
        conversation = self._owned(conversation_id) if CONV_ID.match(conversation_id) else None
        if conversation is None:
            return self._route_error(404, {"message": "Conversation not found"})
        query = parse_qs(urlsplit(self.path).query)
        generation = (query.get("generationId") or [""])[0]
        after = (query.get("fromSeq") or ["0"])[0]
        last = self.headers.get("Last-Event-ID") or ""
        seen = max(int(after) if after.isdigit() else 0, int(last) if last.isdigit() else 0)
        with self.app._lock:
            run = self.app._runs.get((conversation_id, generation))
        self._record(200)
        self.send_response(200)
        for name, value in replay_headers().items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        replay(run, seen, self._write_chunk, self.app._stopping)
        self._end_chunks()

    def _superjson(self, value: Any) -> None:
        self._json(200, {"json": value}, chunked=True)

    def _mine(self) -> list[Conversation]:
        with self.app._lock:
            found = [c for c in self.app._conversations.values() if c.session == self._session_id]
        return sorted(found, key=lambda c: c.updated, reverse=True)

    def _summary(self, conversation: Conversation) -> dict[str, Any]:
        summary: dict[str, Any] = {"id": conversation.id, "title": conversation.title,
                                   "updatedAt": conversation.updated, "modelId": conversation.model}
        extra = {"_id": conversation.id, "model": conversation.model, "assistantId": None, "modelTools": False}
        summary.update({key: extra[key] for key in self.era.summary_extra})
        return summary

    def _model_info(self, model: str) -> dict[str, Any]:
        info: dict[str, Any] = {"id": model, "name": model, "websiteUrl": "https://huggingface.co", "modelUrl": None,
                                "displayName": model, "description": None, "promptExamples": None, "preprompt": "",
                                "multimodal": False, "unlisted": False}
        info.update(dict.fromkeys(self.era.model_extra, False))
        return info

    def _model_info_v2(self, model: str) -> dict[str, Any]:
        keys = ("websiteUrl", "modelUrl", "datasetName", "datasetUrl", "description", "logoUrl", "providers",
                "promptExamples", "preprompt", "multimodalAcceptedMimetypes")
        info: dict[str, Any] = {"id": model, "name": model, "displayName": model, **dict.fromkeys(keys),
                                "parameters": {"stop_sequences": None}}
        info.update(dict.fromkeys(("multimodal", "supportsTools", "supportsReasoning", "unlisted", "hasInferenceAPI",
                                   "isRouter"), False))
        return info

    # -- a message -------------------------------------------------------------------

    def _prompt(self, conversation_id: str, body: bytes) -> None:
        app = self.app
        conversation = self._target(conversation_id)
        if conversation is None:
            return None
        if not app._limiter.allow(self._session_id, str(self.client_address[0])):
            return self._route_error(429, {"message": RATE_LIMITED})
        parts: list[tuple[str, str, bytes]] = []
        payload = self._message_payload(body, parts)
        if payload is None:
            return self._internal()
        if isinstance(payload, str):
            return self._json(400, {"message": payload})
        uploads = read_uploads(self.era, payload, parts) if self.era.files else []
        if uploads is None:
            return self._internal()
        refusal = check_uploads(self.era, uploads)
        if refusal is not None:
            return self._internal() if refusal[0] == 500 else self._json(refusal[0], {"message": refusal[1]})
        try:
            turn = self._place(conversation, payload, uploads)
        except _Refused as exc:
            return self._json(exc.status, {"message": exc.message})
        except (ValueError, KeyError, TypeError):
            return self._internal()
        generation = payload.get("generationId")
        if self.app.head and isinstance(generation, str) and generation:
            turn.generation_id = generation
        # In front of a real model server, its markers are the model server's to act on.
        fault = app._fault("prompt") or (marker_fault(turn.inputs) if app.upstream is None else None)
        _Reply(self, conversation, turn, fault).run()

    def _message_payload(self, body: bytes, files: list[tuple[str, str, bytes]]) -> dict[str, Any] | str | None:
        """The message's JSON; ``None`` if unreadable (a 500), a str for a 400; ``files`` gets the file parts."""
        if self.era.multipart:
            content_type = self.headers.get("Content-Type") or ""
            if not content_type.lower().startswith("multipart/form-data"):
                return None  # request.formData() throws
            fields = _form_parts(body, content_type)
            data = next((content for name, _, _, content in fields if name == "data"), None)
            if data is None:
                return "Invalid request"
            files += [(filename, mime, content) for name, filename, mime, content in fields if name == "files"]
            body = data
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        return payload if isinstance(payload, dict) else None

    def _place(self, conversation: Conversation, payload: Mapping[str, Any], uploads: list[Upload]) -> _Turn:
        """Store the user message (and, in a tree, an empty reply) as the release does; raise when it fails."""
        inputs = payload.get("inputs")
        message_id = payload.get("id")
        is_retry = payload.get("is_retry") is True
        searching = payload.get("web_search") is True and self.era.search is not None
        files = stored_files(self.era, uploads)
        if inputs is not None and (not isinstance(inputs, str) or not inputs.strip()):
            raise ValueError("blank inputs")
        if message_id is not None and not (isinstance(message_id, str) and UUID.match(message_id)):
            raise ValueError("invalid id")
        stamp = now_iso()
        with self.app._lock:
            messages = conversation.messages
            if not self.era.tree:
                if inputs is None:
                    raise ValueError("no inputs")
                if is_retry:
                    index = next((i for i, m in enumerate(messages) if m["id"] == message_id), None)
                    if index is not None:
                        del messages[index:]
                user: dict[str, Any] = {"content": inputs, "from": "user", "id": message_id or str(uuid.uuid4()),
                        "updatedAt": stamp, "files": files, "webSearch": None}
                messages.append(user)
                history = [m for m in messages]
                reply: dict[str, Any] = {"from": "assistant", "content": "", "webSearch": None, "updates": [],
                         "id": str(uuid.uuid4()), "createdAt": stamp, "updatedAt": stamp}
                return _Turn(conversation, history, inputs, reply, first=conversation.title == "New Chat",
                             web_search=searching)
            by_id = {m["id"]: m for m in messages}
            if message_id is None or message_id not in by_id:
                raise ValueError("You need to specify a parentId / Ancestor not found")
            target = by_id[message_id]
            parent: dict[str, Any]
            if payload.get("is_continue") is True and self.era.continues:
                # Extend the reply in place (msg_continue); only the last message of its line can be.
                if target["children"]:
                    raise _Refused(400, "Can only continue the last message")
                history = [by_id[a] for a in target["ancestors"] if a in by_id] + [target]
                user_text = next((m["content"] for m in reversed(history) if m["from"] == "user"), "")
                return _Turn(conversation, history, user_text, target, first=False, previous=target["content"])
            if is_retry and target["from"] == "assistant":
                parent = by_id[target["ancestors"][-1]]  # regenerate: a sibling of the reply
                user_text = parent["content"]
            else:
                if is_retry and target["from"] == "user":
                    target = by_id[target["ancestors"][-1]]  # edit: a sibling of the user message
                if inputs is None:
                    raise ValueError("no inputs")
                parent = {"from": "user", "content": inputs, "files": files, "createdAt": stamp, "updatedAt": stamp,
                          "ancestors": [*target["ancestors"], target["id"]], "id": str(uuid.uuid4()),
                          "children": []}
                target["children"].append(parent["id"])
                messages.append(parent)
                user_text = inputs
            reply = {"from": "assistant", "content": "", "createdAt": stamp, "updatedAt": stamp,
                     "ancestors": [*parent["ancestors"], parent["id"]], "id": str(uuid.uuid4()), "children": [],
                     "updates": [], "interrupted": False}
            parent["children"].append(reply["id"])
            messages.append(reply)
            history = [by_id.get(a) or parent for a in reply["ancestors"]]
            first = conversation.title == "New Chat"
        return _Turn(conversation, [m for m in history if m is not None], user_text, reply, first=first,
                     web_search=searching)


class _Refused(Exception):
    """The route answers ``status`` with ``{"message"}`` (SvelteKit's ``error()``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Turn:
    conversation: Conversation
    history: list[dict[str, Any]]  # the branch the reply answers, its user message last (a continue: the reply)
    inputs: str
    reply: dict[str, Any]  # the assistant message, stored (trees) or to store
    first: bool  # the conversation's first reply: it gets a title
    web_search: bool = False  # search the web first
    previous: str | None = None  # a continue: the reply's text so far
    generation_id: str | None = None  # HEAD: the client's name for the run, kept for /stream


class _Reply(BodyWriter):
    """One streamed answer: chat-ui's updates, one JSON per line and per chunk (msg_send)."""

    def __init__(self, handler: JsonLinesHandler, conversation: Conversation, turn: _Turn, fault: Fault | None):
        super().__init__(handler, fault)
        self.handler: JsonLinesHandler = handler
        self.app = handler.app
        self.era = handler.era
        self.conversation = conversation
        self.turn = turn
        self.streamed: list[str] = []  # the model's pieces sent so far
        self.pending = ""  # 0.8: characters waiting for a whole piece
        self.last_keepalive = time.monotonic()
        self.saved = True  # the reply is to be stored
        self.titled = False  # 0.9's late title is out
        self.run_kept: Run | None = None  # HEAD: the run, kept for replay
        self.run_status = "completed"
        if turn.generation_id is not None:
            self.run_kept = Run()
            with self.app._lock:
                self.app._runs[(conversation.id, turn.generation_id)] = self.run_kept

    # -- writing ---------------------------------------------------------------------

    def _update(self, update: Mapping[str, Any]) -> None:
        if self.run_kept is not None:
            self.run_kept.record(update)
        self._write(dumps(update) + b"\n")
        if update.get("type") in ("stream", "finalAnswer") or update.get("status") == "error":
            with self.app._lock:
                self.app.events_sent += 1

    def _token(self, text: str) -> None:
        era = self.era
        if era.regroup:
            self.pending += text
            while len(self.pending) >= era.regroup:
                piece, self.pending = self.pending[: era.regroup], self.pending[era.regroup :]
                self._update({"type": "stream", "token": piece})
            return
        if era.pad and len(text) < era.pad:
            text += "\u0000" * (era.pad - len(text))
        self._update({"type": "stream", "token": text})

    def _flush(self) -> None:
        if self.pending:
            piece, self.pending = self.pending, ""
            self._update({"type": "stream", "token": piece})

    def _pause(self, seconds: float) -> bool:
        """Wait, writing keepAlive updates where the release does; ``True`` if woken (stop, delete, shutdown)."""
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self.era.keepalive and now - self.last_keepalive >= self.app.keepalive:
                self.last_keepalive = now
                self._update(_KEEPALIVE)
            left = deadline - now
            if left <= 0:
                return bool(self.app._wait(self.conversation.wake, 0))
            step = min(left, self.app.keepalive) if self.era.keepalive else left
            if self.app._wait(self.conversation.wake, step):
                return True

    def _stopped(self) -> bool:
        """A stop that takes effect (a delete or shutdown wakes the stream too, and ends it)."""
        return self.conversation.stopped or self.conversation.deleted or self.app._stopping.is_set()

    # -- the answer --------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self.run_kept is not None:
                self.run_kept.end(self.run_status)

    def _run(self) -> None:
        handler, era, fault, turn = self.handler, self.era, self.fault, self.turn
        self.conversation.stopped = False
        self.conversation.stop_point = None
        self.conversation.wake.clear()
        if fault.delay:
            self.app._stopping.wait(fault.delay)
        handler._record(200)
        handler.send_response(200)
        if era.content_type:
            handler.send_header("content-type", era.content_type)
        handler.send_header("set-cookie", handler._cookie_header())
        if fault.close_delimited:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self._update(_STARTED)
        if turn.first and era.title == "status":
            self._update({"type": "status", "status": "title", "message": turn.inputs})
            self._retitle(turn.inputs)
        if turn.first and era.title == "early":
            self._update({"type": "title", "title": turn.inputs})
            self._retitle(turn.inputs)
        if era.keepalive:
            self.last_keepalive = time.monotonic()
            if self.app.upstream is None:
                # In front of a model server keepAlive runs on its timer only, as the real release's
                # does (no keepAlive before a quick first token: v0.9.4 and v0.10.0 in front of the fakes).
                self._update(_KEEPALIVE)
        if turn.web_search:
            if turn.first and era.title == "late" and self.app.upstream is None:
                # 0.9 makes the title in a model call beside the generation: with a search to run
                # first, the title is out before the search is done (msg_web_search_noengine).
                self._late_title(self._text())
            updates, stored = web_search(era, turn.inputs, self.app.search)
            for update in updates:
                self._update(update)
            with self.app._lock:
                turn.reply["webSearch"] = stored
        if fault.status is not None:
            return self._fail(self._upstream_message(fault.status), status=fault.status)
        if self.app.upstream is not None:
            return self._relay()
        for update in marker_updates(era, turn.inputs, self.conversation.model):
            self._update(update)
        text = self._text()
        pieces = tokenize(text)
        if self._pause(self.app.first_token_delay) and self._stopped():
            return self._on_stop()
        for index, piece in enumerate(pieces):
            if fault.error_after == index:
                return self._fail(fault.error_message)
            if fault.upstream_die_after == index:
                return self._fail("terminated")
            if fault.drop_after == index:
                if self.run_kept is None:
                    self._save("".join(self.streamed))
                    handler.close_connection = True
                    return None
                self._cut()  # HEAD generates on without the client, for /stream
            if fault.malformed_after == index:
                self._write(b"{\"type\":\"stream\",\"token\": not json\n")
            if fault.oversized_after == index:
                self._update({"type": "stream", "token": piece + "x" * fault.oversized_bytes})
            if fault.stall and fault.stall_after == index and self._pause(fault.stall) and self._stopped():
                return self._on_stop()
            pace = fault.pace if fault.pace is not None else self.app.pace
            if index and self._pause(pace) and self._stopped():
                if era.stop == "final" and era.name == "0.7":
                    self._token(piece)  # 0.7 notices the stop after the next token is out (msg_stream_stopped)
                return self._on_stop()
            self.streamed.append(piece)
            self._token(piece)
            if era.tree:
                # The tree's reply exists from the start and its text grows as it streams: a reader
                # (or a client that went away) sees the text so far.
                with self.app._lock:
                    turn.reply["content"] = (turn.previous or "") + "".join(self.streamed)
        self._finish()

    # -- in front of a real model server (issue 20) -------------------------------------

    def _relay(self) -> None:
        """The model server's reply, relayed as the release relays it; its failures in band.

        0.10 makes two generation attempts (its MCP flow, then plain generation), each
        with the OpenAI SDK's retries of a 408/409/429/5xx or a failed connection; the
        second attempt streams from the start again, so its tokens follow the first's.
        """
        attempts = 2 if self.era.upstream_status else 1
        failure: tuple[str, int | None] = ("terminated", None)
        for _ in range(attempts):
            outcome = self._attempt()
            if outcome is None:
                return None
            failure = outcome
        return self._fail(failure[0], status=failure[1], attempted=True)

    def _attempt(self) -> tuple[str, int | None] | None:
        """One generation attempt: ``None`` once the reply ended (or was stopped), else its failure."""
        openai = self.app.upstream_api == "openai"
        tries = 3 if openai else 1  # the OpenAI SDK's maxRetries=2
        for retry in range(tries):
            call = Call(self._upstream_request(retry), read_timeout=self.app.upstream_timeout)
            try:
                outcome = self._stream_call(call)
            finally:
                call.close()
            if outcome is None or outcome[2] is False or retry == tries - 1:
                return None if outcome is None else (outcome[0], outcome[1])
            if self._pause(0.5 * 2**retry) and self._stopped():  # the SDK's backoff
                self._on_stop()
                return None
        return None

    def _stream_call(self, call: Call) -> tuple[str, int | None, bool] | None:
        """Relay one call: ``None`` once the reply ended or was stopped, else (message, status, retryable)."""
        era, app = self.era, self.app
        openai = app.upstream_api == "openai"
        got_token = False
        while True:
            event = call.next(app.keepalive if era.keepalive else 0.1)
            if self._stopped():
                call.close()  # stop-generating cuts the model server's request (0.7, 0.10)
                self._on_stop()
                return None
            if era.keepalive and time.monotonic() - self.last_keepalive >= app.keepalive:
                # On the release's timer, between tokens too (the real v0.9.4 and v0.10.0 in front of a model).
                self.last_keepalive = time.monotonic()
                self._update(_KEEPALIVE)
            if event is None:
                continue
            if event.kind == "token":
                got_token = True
                self.streamed.append(event.text)
                self._token(event.text)
                if era.tree:
                    with app._lock:
                        self.turn.reply["content"] = (self.turn.previous or "") + "".join(self.streamed)
                continue
            if event.kind == "end":
                self._finish()
                return None
            if event.kind == "down":
                # Node's fetch (0.7-0.9); the OpenAI SDK (0.10), which retries it.
                return ("Connection error." if openai else "fetch failed"), None, openai
            if event.kind == "died":
                # In band it is chat-ui's word; the cause goes to the log (a test that fails shows it).
                logger.warning("the model server's reply broke off: %s", event.text)
                return "terminated", None, False
            status = event.status
            retryable = openai and not got_token and status is not None and (status in (408, 409, 429) or status >= 500)
            return event.text, status, retryable

    def _upstream_request(self, retry: int) -> Request:
        app, conversation = self.app, self.conversation
        if app.upstream_api == "openai":
            messages = [{"role": "system", "content": conversation.preprompt}] if conversation.preprompt else []
            messages += [{"role": m["from"], "content": m["content"]} for m in self.turn.history
                         if m["from"] in ("user", "assistant")]
            return openai_request(app.upstream or "", conversation.model, messages, key=app.upstream_key,
                                  conversation_id=conversation.id, retry=retry)
        # v0.9 sends no "options" (tests/data/upstream).
        return tgi_request(app.upstream or "", self._model_prompt(), options=self.era.name in ("0.7", "0.8"),
                           key=app.upstream_key, parameters=app.model_parameters)

    def _finish(self) -> None:
        """The reply is complete: title (0.9), store, finalAnswer."""
        self._flush()
        text = "".join(self.streamed)
        if self.turn.first and self.era.title == "late" and not self.titled:
            self._late_title(text)
        self._save(text)
        self._final(text, interrupted=False)

    def _late_title(self, text: str) -> None:
        """0.9's title: the model's summary (the local model answers it as it answers the prompt)."""
        title = f"💬 {text}"
        self._update({"type": "title", "title": title})
        self._retitle(title)
        self.titled = True

    def _text(self) -> str:
        named = marker_reply(self.turn.inputs)
        if named is not None:
            return named
        reply = self.app.reply
        prompt = self._model_prompt()
        return reply(prompt) if callable(reply) else (reply if reply is not None else default_reply(prompt))

    def _model_prompt(self) -> str:
        """The prompt chat-ui builds: the model's legacy tokens in 0.7, ChatML from 0.8 (captures' fake logs)."""
        history = [m for m in self.turn.history if m["from"] != "system"]
        preprompt = self.conversation.preprompt
        if self.app.chat_template is not None:
            messages = [{"role": "system", "content": preprompt}] if preprompt else []
            messages += [{"role": m["from"], "content": m["content"]} for m in history]
            return str(self.app.chat_template(messages))
        if self.era.prompt_format == "h2ogpt":
            # The model's userMessageToken and assistantMessageToken, and no end tokens: the real
            # v0.7 sent "<|prompt|>Hello<|answer|>" (tests/data/upstream/chat-ui-v0.7.jsonl).
            out = [preprompt]
            for m in history:
                out.append(f"{'<|prompt|>' if m['from'] == 'user' else '<|answer|>'}{m['content']}")
            return "".join(out) + "<|answer|>"
        out = [f"<|im_start|>system\n{preprompt}<|im_end|>\n"] if preprompt else []
        for m in history:
            out.append(f"<|im_start|>{m['from']}\n{m['content']}<|im_end|>\n")
        if self.turn.previous is not None:
            # A continue: the reply so far, without its end token, is where the model goes on.
            return "".join(out).removesuffix("<|im_end|>\n")
        return "".join(out) + "<|im_start|>assistant\n"

    def _upstream_message(self, status: int) -> str:
        if self.era.upstream_status and status in _OPENAI_MESSAGES:
            return _OPENAI_MESSAGES[status]
        body = TGI_BODIES.get(status, {"error": f"HTTP {status}"})
        return body["error"]

    def _retitle(self, title: str) -> None:
        with self.app._lock:
            self.conversation.title = title

    def _save(self, text: str) -> None:
        """Store the reply (the user message is stored already)."""
        with self.app._lock:
            if self.conversation.deleted or not self.saved:
                return
            stamp = now_iso()
            reply = self.turn.reply
            reply["content"] = (self.turn.previous or "") + text
            reply["updatedAt"] = stamp
            self.conversation.updated = stamp
            if reply not in self.conversation.messages:
                self.conversation.messages.append(reply)

    def _cut(self) -> None:
        """The connection drops (a fault): the client sees its body end in the middle."""
        self.connected = False
        self.handler.close_connection = True
        with contextlib.suppress(OSError):
            self.handler.connection.shutdown(socket.SHUT_RDWR)

    def _on_stop(self) -> None:
        """Stop-generating (0.7, 0.10), or a delete or shutdown: end as the release does."""
        text = "".join(self.streamed)
        self.run_status = "interrupted"
        point = self.conversation.stop_point
        if point is not None and point[0] == self.turn.generation_id:
            text = clamp(text, point[1])  # HEAD keeps what the client saw (head_stop_with_stop_point)
        self._flush()
        self._save(text)
        if self.conversation.deleted or self.app._stopping.is_set():
            self.handler.close_connection = True
            return None
        self._final(text, interrupted=True)

    def _fail(self, message: str, *, status: int | None = None, attempted: bool = False) -> None:
        """The generation failed: end as the release does.

        Args:
            attempted: The attempts were made for real (a model server in front):
                nothing more to act out.
        """
        era = self.era
        self.run_status = "error"
        if era.upstream_status and not attempted:
            # 0.10 tries the upstream again (its MCP flow, then plain generation, the OpenAI SDK's
            # retries): keepAlive lines meanwhile, and a stream that died is streamed again first.
            if self.streamed:
                again = list(self.streamed)
                for piece in again:
                    self._token(piece)
                self.streamed += again  # the second attempt's text is appended to the first's
            if status is not None:
                self._pause(3 * self.app.keepalive)
        if not era.tree and not self.streamed:
            self.saved = False  # 0.7 keeps only the user message when nothing was generated
        update: dict[str, Any] = {"type": "status", "status": "error",
                                  "message": f"{status} {message}" if era.upstream_status and status else message}
        if era.upstream_status and status is not None:
            update["statusCode"] = status
        if era.name == "0.9" and self.turn.first:
            self._update({"type": "title", "title": "New Chat"})
        text = "".join(self.streamed)
        self._save(text)  # before the error goes out: a client reading back at once sees what was kept
        self._update(update)
        if era.after_error == "nothing":
            return self._end()
        self._flush()
        if era.after_error == "prompt":
            # 0.7 sends the last stored message's text: the user's prompt when nothing was generated.
            self._final(text or self.turn.inputs, interrupted=None)
        else:
            self._final(text, interrupted=None)

    def _final(self, text: str, *, interrupted: bool | None) -> None:
        era = self.era
        if self.turn.previous is not None and era.continue_whole:
            text = self.turn.previous + text  # 0.8 answers a continue with the whole message
        final: dict[str, Any] = {"type": "finalAnswer", "text": text}
        if era.interrupted:
            final["interrupted"] = bool(interrupted)
        self._update(final)
        self._write(_PADDING)
        if era.finished:
            self._update(_FINISHED)
        if era.ends:
            return self._end()
        self._hold()

    def _end(self) -> None:
        if self.connected and not self.fault.close_delimited:
            try:
                self.handler.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.handler.close_connection = True

    def _hold(self) -> None:
        """0.7 never ends its response: keep it open until the client goes (bounded, so tests end)."""
        self.handler.close_connection = True
        deadline = time.monotonic() + self.app.hold_open
        while self.connected and not self.app._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self.handler._client_gone(min(left, 0.05)):
                return


_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _form_parts(body: bytes, content_type: str) -> list[tuple[str, str, str, bytes]]:
    """The parts of a ``multipart/form-data`` body as ``(name, filename, content type, content)``."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return []
    out = []
    for chunk in body.split(b"--" + boundary.encode()):
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = filename = mime = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-type":
                mime = value.strip()
            elif key.strip().lower() == "content-disposition":
                # Quoted values may hold ";" (the web UI's filenames are "base64;<name>").
                for pkey, pvalue in _PARAM.findall(value):
                    pvalue = pvalue.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
                    if pkey == "name":
                        name = pvalue
                    elif pkey == "filename":
                        filename = pvalue
        out.append((name, filename, mime, content.removesuffix(b"\r\n")))
    return out
