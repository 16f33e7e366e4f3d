"""The ``"0.4"`` family: chat-ui 0.3-0.6 in front of TGI, as gpt-gm.h2o.ai ran it (``shared/protocol.md``).

Section numbers in comments refer to that document.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._http import BodyWriter, ConversationRoutes
from ._pagedata import Date, error_document, layout_document, page_document
from ._replies import default_reply, token_id, tokenize
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
from ._upstream import Call, Event, openai_request

_END_TEXT, _END_ID = "<|endoftext|>", 11
_GATE_EXEMPT = ("/settings", "/login", "/admin")
_INTERNAL = {"message": "Internal Error"}
# The conversation page's errors (chat-ui 0.4, observed on loopback 2026-12-02).
_PAGE_NOT_FOUND = "Conversation not found."
_PAGE_FORBIDDEN = ("You don't have access to this conversation. If someone gave you this link, ask them to use the "
                   "'share' feature instead.")
_SETTINGS_ERROR = {"type": "error", "error": {"message": "Internal Error"}}


class Handler04(ConversationRoutes):
    """The hook and routes of chat-ui 0.4."""

    def _internal(self) -> None:
        self._route_error(500, _INTERNAL)

    def _step_fault(self, step: str) -> bool:
        return self._fault_status(self.app._fault(step))

    # -- the request hook (2.2) ---------------------------------------------------

    def _dispatch(self) -> None:
        body = self._read_body()
        path = self._app_path()
        cookie = cookie_value(self.headers.get("Cookie"))
        self._session_id = cookie or str(uuid.uuid4())
        app = self.app
        if path is None:
            return self._outside_app()
        if self._csrf_refused("referer"):
            return None
        with app._lock:
            session = app._sessions.get(self._session_id)
        gated = self.command not in ("GET", "HEAD", "OPTIONS") and not path.startswith(_GATE_EXEMPT)
        if gated and app.require_login and not app._logged_in(cookie):
            return self._hook_error(401, LOGIN)  # 2.2: with a login there is no welcome gate
        if gated and app.require_welcome and not app.require_login and not (session and session.accepted):
            return self._hook_error(405, WELCOME)
        try:
            self._route(path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _route(self, path: str, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        method = self.command
        if method == "POST" and parts == ["settings"]:
            return self._settings(body)
        if method == "POST" and parts == ["conversation"]:
            return self._create(body)
        if method == "POST" and parts == ["conversations"]:
            return self._delete_all_action()
        if method in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "conversation":
            return self._page(parts[1])
        if len(parts) >= 2 and parts[0] == "conversation":
            conversation_id, rest = parts[1], parts[2:]
            if method in ("GET", "HEAD") and rest in (["stop-generating"], ["summarize"]):
                # SvelteKit's answer for an endpoint without GET, before any handler runs, whatever
                # the id (what detection probes for).
                return self._send(405, b"GET method not allowed", content_type="text/plain;charset=UTF-8",
                                  headers={"allow": "POST"})
            if method in ("GET", "HEAD") and rest != ["__data.json"]:
                return self._svelte_page(404, "Not Found", "<h1>404</h1><p>Not Found</p>")  # no such route
            if not CONV_ID.match(conversation_id):
                return self._route_error(500, _INTERNAL)
            if self._conversation_write(conversation_id, rest, body):
                return None
            if method in ("GET", "HEAD"):
                if self._step_fault("read"):
                    return None
                return self._page_data(conversation_id)
            if method == "POST" and rest == ["summarize"]:
                # Title generation needs a non-streaming endpoint; TGI's
                # /generate_stream cannot serve it (2.7).
                if self._target(conversation_id) is None:
                    return None
                return self._route_error(500, _INTERNAL)
        if method in ("GET", "HEAD") and not parts:
            return self._svelte_page(200, "HuggingChat")
        if method in ("GET", "HEAD") and parts == ["__data.json"]:
            # The root layout's data: the session's conversations, newest first (0.4's sidebar).
            with self.app._lock:
                mine = [c for c in self.app._conversations.values() if c.session == self._session_id]
            layout = {"conversations": [{"id": c.id, "title": c.title, "model": c.model} for c in reversed(mine)]}
            return self._send(200, layout_document(layout), content_type="application/json",
                              headers={"cache-control": "private, no-store"})
        if method in ("GET", "HEAD"):
            # An unknown route is SvelteKit's 404 page, whatever the Accept (v0.6 api_api_models).
            return self._svelte_page(404, "Not Found", "<h1>404</h1><p>Not Found</p>")
        return self._route_error(404, {"message": "Not found"})

    def _fault_status(self, fault: Fault | None, *, tgi: bool = False) -> bool:
        status = fault.status if fault is not None else None
        if tgi and status is not None and status in TGI_BODIES:
            body: Any = TGI_BODIES[status]
        else:
            body = {"message": RATE_LIMITED} if status == 429 else (NOT_FOUND if status == 404 else _INTERNAL)
        return self._answer_fault(fault, body)

    # -- routes ---------------------------------------------------------------

    def _settings(self, body: bytes) -> None:
        app = self.app
        if self._fault_status(app._fault("settings")):
            return None
        content_type = (self.headers.get("Content-Type") or "").lower()
        if "application/x-www-form-urlencoded" not in content_type:
            return self._json(500, _SETTINGS_ERROR)  # 2.3: a JSON body fails
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        model = form.get("activeModel") or app.models[0]
        if model not in app.models:
            return self._json(500, _SETTINGS_ERROR)
        with app._lock:
            session = app._sessions.setdefault(self._session_id, Session())
            # 2.3: any non-empty value counts as true, "false" included.
            session.accepted = bool(form.get("ethicsModalAccepted"))
            session.active_model = model
        referer = self.headers.get("Referer") or "/"
        if "text/html" in (self.headers.get("Accept") or ""):
            return self._send(303, headers={"location": referer}, chunked=True)
        return self._json(200, {"type": "redirect", "status": 303, "location": referer})

    def _create(self, body: bytes) -> None:
        app = self.app
        if self._fault_status(app._fault("create")):
            return None
        try:
            payload = json.loads(body)
            model = payload["model"]
        except (ValueError, KeyError, TypeError):
            return self._route_error(500, _INTERNAL)
        if model not in app.models:
            return self._route_error(500, _INTERNAL)
        messages: list[dict[str, str]] = []
        if "fromShare" in payload:
            return self._route_error(404, NOT_FOUND)
        with app._lock:
            app._counter += 1
            conversation_id = secrets.token_hex(12)
            app._conversations[conversation_id] = Conversation(
                conversation_id, self._session_id, model, f"Untitled {app._counter}", messages
            )
        self._send(200, dumps({"conversationId": conversation_id}), content_type="application/json", chunked=True)

    def _page(self, conversation_id: str) -> None:
        """``GET /conversation/{id}`` as the real 0.4 answers it.

        A browser (``Accept`` with ``text/html``) gets the page: 200 while the
        conversation lives, 404 once it is deleted, 403 in another session,
        500 for a malformed id. Anything else reaches the endpoint, which has
        no GET: 405 whether or not the conversation exists.
        """
        if "text/html" not in (self.headers.get("Accept") or ""):
            return self._send(405, b"GET method not allowed", content_type="text/plain;charset=UTF-8",
                              headers={"allow": "POST, PATCH, DELETE"})
        if not CONV_ID.match(conversation_id):
            return self._route_error(500, _INTERNAL)
        with self.app._lock:
            found = self.app._conversations.get(conversation_id)
        if found is None:
            return self._route_error(404, {"message": _PAGE_NOT_FOUND})
        if found.session != self._session_id:
            return self._route_error(403, {"message": _PAGE_FORBIDDEN})
        return self._svelte_page(200, found.title)

    def _prompt(self, conversation_id: str, body: bytes) -> None:
        app = self.app
        conversation = self._target(conversation_id)
        if conversation is None:
            return None
        if app.rate_limit is not None and not self._within_rate_limit():
            return self._route_error(429, {"message": "You are sending too many messages. Try again later."})
        try:
            payload = json.loads(body)
            inputs, options = _validate_prompt(payload)
        except (ValueError, KeyError, TypeError):
            return self._route_error(500, _INTERNAL)
        # In front of a real model server, its markers are the model server's to act on.
        fault = app._fault("prompt") or (marker_fault(inputs) if app.upstream is None else None)
        if self._fault_status(fault, tgi=True):
            return None
        history = list(conversation.messages)
        if options.get("is_retry"):
            index = next((i for i, m in enumerate(history) if m.get("id") == options.get("id")), None)
            if index is not None:
                history = history[:index]
        stamp = now_iso()
        user = {"from": "user", "content": inputs, "id": options.get("id") or str(uuid.uuid4()), "createdAt": stamp,
                "updatedAt": stamp}
        prompt = _build_prompt(app.preprompt, [*history, user])
        turn = _Turn(self, conversation, history, user, options, prompt)
        if app.upstream is not None and app.upstream_api == "openai":
            return _Translate(turn).run()
        if app.upstream is not None:
            return _Forward(turn, payload).run()
        parameters = payload.get("parameters")
        _Generation(turn, parameters if isinstance(parameters, dict) else {}, fault).run()

    def _within_rate_limit(self) -> bool:
        return bool(self.app._limiter.allow(self._session_id, str(self.client_address[0])))

    def _page_data(self, conversation_id: str) -> None:
        """``GET /conversation/{id}/__data.json``: the stored messages, as the page loads them (0.4 on loopback)."""
        with self.app._lock:
            found = self.app._conversations.get(conversation_id)
            messages = [dict(m) for m in found.messages] if found is not None else []
        if found is None or found.session != self._session_id:
            status, message = (404, _PAGE_NOT_FOUND) if found is None else (403, _PAGE_FORBIDDEN)
            return self._send(200, error_document(status, message), content_type="application/json")
        stored = []
        for m in messages:
            item = {"content": m["content"], "from": m["from"], "id": m["id"], "createdAt": Date(m["createdAt"]),
                    "updatedAt": Date(m["updatedAt"])}
            if m["from"] == "assistant":
                item["webSearchId"] = None
            stored.append(item)
        page = {"messages": stored, "title": found.title, "model": found.model, "searches": {}}
        layout = {"conversations": [{"id": found.id, "title": found.title, "model": found.model}]}
        body = page_document(layout, page, f"{self.app.url}/conversation/conversation")
        self._send(200, body, content_type="application/json", headers={"cache-control": "private, no-store"})


class _Generation(BodyWriter):
    """One TGI ``/generate_stream`` answer, relayed by chat-ui (2.5, 3)."""

    def __init__(self, turn: _Turn, parameters: Mapping[str, Any], fault: Fault | None) -> None:
        super().__init__(turn.handler, fault)
        self.turn = turn
        self.app = turn.handler.app
        self.conversation = turn.conversation
        self.prompt = turn.prompt
        self.parameters = parameters
        self.eol = self.fault.line_ending.encode()
        self.notice_at: float | None = None  # when the generation notices a stop (its poll)

    def run(self) -> None:
        fault, conversation = self.fault, self.conversation
        conversation.stopped = False
        conversation.wake.clear()
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        if fault.close_delimited:
            headers["Connection"] = "close"
            self.handler.close_connection = True
        else:
            headers["Transfer-Encoding"] = "chunked"
        self.handler._record(200)
        self.handler.send_response(200)
        self.handler.send_header("content-type", "text/event-stream")
        for name, value in headers.items():
            self.handler.send_header(name, value)
        self.handler.send_header("set-cookie", self.handler._cookie_header())
        self.handler.end_headers()

        validation = _validation_error(self.parameters)
        if validation is not None:
            self._event({"error": validation, "error_type": "validation"})
            return self._end()
        pieces, finish_reason = self._plan()
        parts: list[str] = []
        if self._pause(self.app.first_token_delay):
            return self._cut(parts, pieces[0] if pieces else "")
        for index, piece in enumerate(pieces):
            if fault.error_after == index:
                self._event({"error": fault.error_message, "error_type": fault.error_type})
                return self._end()
            if fault.drop_after == index or fault.upstream_die_after == index:
                return self._drop()  # 2.8: a dead model server cuts the body too, and nothing is saved
            if fault.malformed_after == index:
                self._write_event(b"data:{\"token\": not json" + self.eol + self.eol)
            if fault.oversized_after == index:
                self._event(self._token(piece + "x" * fault.oversized_bytes))
            if fault.stall and fault.stall_after == index and self._pause(fault.stall):
                return self._cut(parts, piece)
            if index and self._pause(self.fault.pace if self.fault.pace is not None else self.app.pace):
                return self._cut(parts, piece)
            parts.append(piece)
            last = index == len(pieces) - 1 and finish_reason != "eos_token"
            final = "".join(parts) if last else None
            self._event(self._token(piece), final=final, finish_reason=finish_reason, generated=len(parts))
        if finish_reason == "eos_token":
            if self._pause(self.app.pace):
                return self._cut(parts)
            end = self._token(_END_TEXT, special=True)
            self._event(end, final="".join(parts), finish_reason=finish_reason, generated=len(parts) + 1)
        # Saved before the terminator, so a client that has seen the end (and its
        # next prompt) always finds the history stored.
        self.turn.save("".join(parts))
        self._end()

    def _plan(self) -> tuple[list[str], str]:
        reply = self.app.reply
        text = reply(self.prompt) if callable(reply) else (reply if reply is not None else default_reply(self.prompt))
        named = marker_reply(self.turn.user["content"])
        pieces = tokenize(named if named is not None else text)
        finish_reason = "eos_token"
        stops = self.parameters.get("stop") or []
        if isinstance(stops, list) and stops:
            so_far = ""
            for index, piece in enumerate(pieces):
                so_far += piece
                if any(isinstance(s, str) and s and s in so_far for s in stops):
                    pieces, finish_reason = pieces[: index + 1], "stop_sequence"
                    break
        limit = self.parameters.get("max_new_tokens")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else len(pieces) + 1
        # Reaching the limit exactly still ends on "length": TGI stops before the end token.
        if len(pieces) > limit or (len(pieces) == limit and finish_reason == "eos_token"):
            pieces, finish_reason = pieces[:limit], "length"
        return pieces, finish_reason

    def _token(self, text: str, *, special: bool = False) -> dict[str, Any]:
        tid = _END_ID if special else token_id(text)
        return {"id": tid, "text": text, "logprob": round(-(tid % 997) / 1000, 4), "special": special}

    def _event(
        self, obj: Mapping[str, Any], *, final: str | None = None, finish_reason: str = "", generated: int = 0
    ) -> None:
        if "error" not in obj:
            details = None
            if final is not None and self.parameters.get("details"):
                seed = self.parameters.get("seed")
                details = {"finish_reason": finish_reason, "generated_tokens": generated,
                           "seed": seed if isinstance(seed, int) else None}
            obj = {"token": obj, "generated_text": final, "details": details}
        self._write_event(b"data:" + dumps(obj) + self.eol + self.eol)
        with self.app._lock:
            self.app.events_sent += 1

    def _write_event(self, data: bytes) -> None:
        self._write(data)

    def _pause(self, seconds: float) -> bool:
        """Wait, sending keep-alive comments on long silences; ``True`` if cut short.

        A delete or shutdown cuts at once. A stop is noticed as the real 0.4
        notices it: on its poll of stopped generations (``stop_poll``, 1 s),
        so tokens go on until then; and a second stop of one conversation
        within ``stop_ignore`` (30 s) of the first is not noticed at all.
        """
        app, conversation = self.app, self.conversation
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self.notice_at is not None and now >= self.notice_at:
                conversation.last_stop = now
                return True
            left = deadline - now
            step = min(left, app.keepalive)
            if self.notice_at is not None:
                step = min(step, self.notice_at - now)
            if app._wait(conversation.wake, step):
                if conversation.deleted or app._stopping.is_set() or not conversation.stopped:
                    return True
                if self.notice_at is None:
                    conversation.wake.clear()
                    if time.monotonic() - conversation.last_stop < app.stop_ignore:
                        conversation.stopped = False  # still listed from the last stop: this one is lost
                    else:
                        poll = app.stop_poll
                        since = time.monotonic() - app._started
                        self.notice_at = app._started + (int(since / poll) + 1) * poll if poll > 0 else 0.0
                continue
            if self.notice_at is not None and time.monotonic() >= self.notice_at:
                continue
            if left <= app.keepalive:
                return False
            self._write(b":" + self.eol + self.eol)

    def _end(self) -> None:
        if not self.fault.close_delimited:
            self._write_terminator()

    def _write_terminator(self) -> None:
        if self.connected:
            try:
                self.handler.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.handler.close_connection = True

    def _drop(self) -> None:
        self.handler.close_connection = True

    def _cut(self, parts: list[str], unsent: str = "") -> None:
        # stop-generating (or delete, or shutdown): the connection closes without
        # the terminating chunk, and the partial reply is saved (2.7), with the
        # token of the chunk in which the stop was noticed, which is never sent
        # (observed on the real 0.4, 2026-12-02).
        self.handler.close_connection = True
        if self.conversation.stopped and not self.conversation.deleted:
            self.turn.save("".join(parts) + unsent)


@dataclass
class _Turn:
    """One prompt to answer: the request, the conversation, and what to store with the reply."""

    handler: Handler04
    conversation: Conversation
    history: list[dict[str, str]]
    user: dict[str, str]
    options: Mapping[str, Any]
    prompt: str

    def save(self, text: str) -> None:
        """Store the user message and the reply together (2.5: only after the stream, or a stop)."""
        with self.handler.app._lock:
            if self.conversation.deleted:
                return
            reply_id = self.options.get("response_id") or str(uuid.uuid4())
            stamp = now_iso()
            assistant = {"from": "assistant", "content": text, "id": reply_id, "createdAt": stamp, "updatedAt": stamp}
            self.conversation.messages[:] = [*self.history, self.user, assistant]


class _Forward:
    """chat-ui in front of a real TGI: the client's body goes upstream with only
    ``inputs`` replaced by the history-built prompt; status, headers and bytes
    come back verbatim, plus the cookie (2.5). A stop takes effect at the next
    upstream chunk (2.7)."""

    _HOP_BY_HOP = ("transfer-encoding", "connection", "content-length", "keep-alive", "date", "server")

    def __init__(self, turn: _Turn, payload: Mapping[str, Any]) -> None:
        self.turn = turn
        self.handler = turn.handler
        self.app = turn.handler.app
        self.conversation = turn.conversation
        self.body = dumps({**payload, "inputs": turn.prompt})

    def run(self) -> None:
        app, conversation, handler = self.app, self.conversation, self.handler
        target = urlsplit(app.upstream or "")
        kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        connection = kind(target.hostname or "127.0.0.1", target.port, timeout=300)
        try:
            connection.request("POST", target.path or "/", self.body,
                               {"Content-Type": "application/json", "Accept": "text/event-stream"})
            upstream = connection.getresponse()
        except OSError:
            connection.close()
            return handler._route_error(500, _INTERNAL)  # upstream unreachable (2.8)
        with app._lock:
            app._upstreams.add(connection)
        try:
            conversation.stopped = False
            conversation.wake.clear()
            handler._record(upstream.status)
            handler.send_response(upstream.status)
            for name, value in upstream.getheaders():
                if name.lower() not in self._HOP_BY_HOP:
                    handler.send_header(name, value)
            handler.send_header("set-cookie", handler._cookie_header())
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            self._relay(upstream)
        finally:
            with app._lock:
                app._upstreams.discard(connection)
            connection.close()

    def _relay(self, upstream: http.client.HTTPResponse) -> None:
        handler = self.handler
        pending = b""
        parts: list[str] = []
        final: str | None = None
        while True:
            try:
                data = upstream.read1(65536)
            except (OSError, http.client.HTTPException):
                data = None  # the upstream died: no terminating chunk, nothing saved (2.8)
            if _cut(self.turn, parts):
                return
            if data is None:
                handler.close_connection = True
                return
            if not data:
                break
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            pending += data
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data:"):
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    obj = json.loads(event[5:])
                    if not obj["token"]["special"]:
                        parts.append(obj["token"]["text"])
                    if obj.get("generated_text") is not None:
                        final = obj["generated_text"]
        if upstream.status == 200 and final is not None:
            self.turn.save(final)
        handler.wfile.write(b"0\r\n\r\n")




class _Translate:
    """0.4 in front of an OpenAI-compatible model server (no real 0.4 could be): its chunks
    are written as the TGI token events 0.4 passes through, its error status and message
    as TGI's error body, and a stop cuts both streams, as with TGI."""

    def __init__(self, turn: _Turn) -> None:
        self.turn = turn
        self.handler = turn.handler
        self.app = turn.handler.app
        self.conversation = turn.conversation

    def run(self) -> None:
        app, turn, handler, conversation = self.app, self.turn, self.handler, self.conversation
        messages = [{"role": "system", "content": app.preprompt}] if app.preprompt else []
        messages += [{"role": m["from"], "content": m["content"]} for m in [*turn.history, turn.user]]
        call = Call(openai_request(app.upstream or "", conversation.model, messages, key=app.upstream_key,
                                   conversation_id=conversation.id), read_timeout=app.upstream_timeout)
        try:
            event = call.next(app.upstream_timeout)
            if event is None or event.kind in ("down", "died"):
                return handler._route_error(500, _INTERNAL)  # as 0.4 with its model server down (2.8)
            if event.kind == "error" and event.status is not None:
                return handler._json(event.status, {"error": event.text, "error_type": "generation"})
            conversation.stopped = False
            conversation.wake.clear()
            handler._record(200)
            handler.send_response(200)
            handler.send_header("content-type", "text/event-stream")
            handler.send_header("set-cookie", handler._cookie_header())
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            self._relay(call, event)
        finally:
            call.close()

    def _relay(self, call: Call, event: Event | None) -> None:
        handler = self.handler
        parts: list[str] = []
        while True:
            if _cut(self.turn, parts):
                return
            if event is None:
                event = call.next(0.1)
                continue
            if event.kind == "token":
                parts.append(event.text)
                self._event({"token": {"id": token_id(event.text), "text": event.text, "logprob": 0.0,
                                       "special": False}, "generated_text": None, "details": None})
            elif event.kind == "end":
                text = "".join(parts)
                self._event({"token": {"id": _END_ID, "text": _END_TEXT, "logprob": 0.0, "special": True},
                             "generated_text": text, "details": None})
                self.turn.save(text)
                handler.wfile.write(b"0\r\n\r\n")
                return
            elif event.kind == "error":
                self._event({"error": event.text, "error_type": "generation"})
                handler.wfile.write(b"0\r\n\r\n")
                return
            else:  # the model server died: so does the stream, without its end (2.8)
                handler.close_connection = True
                return
            event = None

    def _event(self, obj: Mapping[str, Any]) -> None:
        data = b"data:" + dumps(obj) + b"\n\n"
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _cut(turn: _Turn, parts: list[str]) -> bool:
    """A stop, delete or shutdown while relaying a model server: cut without the terminating
    chunk, and keep what was relayed after a stop (2.7); ``True`` if so."""
    conversation, app = turn.conversation, turn.handler.app
    if not (conversation.wake.is_set() or app._stopping.is_set()):
        return False
    turn.handler.close_connection = True
    if conversation.stopped:
        turn.save("".join(parts))
    return True


def _validate_prompt(payload: Any) -> tuple[str, Mapping[str, Any]]:
    """2.5.4: what chat-ui's zod schema checks; anything else raises."""
    inputs = payload["inputs"]
    options = payload["options"]
    if not isinstance(inputs, str) or not inputs.strip() or not isinstance(options, dict):
        raise ValueError("invalid body")
    for key in ("id", "response_id"):
        if key in options and not (isinstance(options[key], str) and UUID.match(options[key])):
            raise ValueError(f"invalid {key}")
    if "is_retry" in options and not isinstance(options["is_retry"], bool):
        raise ValueError("invalid is_retry")
    if "web_search_id" in options and not isinstance(options["web_search_id"], str):
        raise ValueError("invalid web_search_id")
    return inputs, options


def _validation_error(parameters: Mapping[str, Any]) -> str | None:
    """TGI's parameter validation, sent as the first and only event (3.3)."""
    temperature = parameters.get("temperature")
    if isinstance(temperature, (int, float)) and temperature <= 0:
        return "Input validation error: `temperature` must be strictly positive"
    top_p = parameters.get("top_p")
    if isinstance(top_p, (int, float)) and not 0 < top_p < 1:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    limit = parameters.get("max_new_tokens")
    if isinstance(limit, int) and limit <= 0:
        return "Input validation error: `max_new_tokens` must be strictly positive"
    return None


def _build_prompt(preprompt: str, messages: Sequence[Mapping[str, str]]) -> str:
    """The h2ogpt-gm chat prompt chat-ui builds from the stored history (2.5)."""
    out = [preprompt]
    for message in messages:
        if message["from"] == "user":
            out.append(f"<|prompt|>{message['content']}<|endoftext|>")
        else:
            out.append(f"<|answer|>{message['content']}<|endoftext|>")
    out.append("<|answer|>")
    return "".join(out)


