"""The chat-ui operations a turn asks for, built from the family's data and the session's requests.

:class:`Operations` is what :class:`~._lifecycle.Turn` talks to (its
``Transport``): create a conversation, find the message to answer under,
send the prompt, read back what the server stored, and the cleanup requests
(stop, delete), sent inline or handed to the :class:`~._lifecycle.Cleaner`.
It also keeps the client's running turns and its spare conversations, so
``Client.close()`` can clean up all of them. The payloads and the parsing are
pure functions of :mod:`h2o_sdk._protocol`; the requests go through the
:class:`~._session.ServerSession`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from . import _protocol
from ._exceptions import APIStatusError, H2oError, ProtocolError, UnsupportedError
from ._http import Abort, Http, StreamBody
from ._lifecycle import Cleaner, Step, Turn, delete_step
from ._prefetch import Spares
from ._protocol import Prompt, _readback, multipart_body
from ._session import ServerSession, add_to_message, name_the_model
from ._types import ConversationInfo

__all__ = ["Operations"]

logger = logging.getLogger("h2o_sdk")

# Below this round trip (loopback, a fast LAN) cleanup is sent inline: a background
# thread would cost more CPU (GIL hand-offs, ~0.4 ms a chat measured) than the wait.
_INLINE_RTT = 0.002
_STREAM_ACCEPT = {"Accept": "text/event-stream, application/json"}
# A listing stops after this many pages (300 conversations a page in 0.8/0.9, 30 in 0.10).
_MAX_PAGES = 1000
_API_PAGE = 300
_ANY_ACCEPT = {"Accept": "*/*"}


class Operations:
    """A client's conversations on the server, as its turns ask for them (``_lifecycle.Transport``).

    Args:
        http: The HTTP boundary.
        session: The server session.
        prefetch: How many conversations to keep created ahead.
    """

    def __init__(self, http: Http, session: ServerSession, *, prefetch: int) -> None:
        self._http = http
        self.session = session
        self.timeout = http.timeout
        self.closed = False
        self.resumable = False  # the server is chat-ui HEAD, which follows a generation again (issue 21)
        self._lock = threading.Lock()
        self._turns: set[Turn] = set()
        self._roots: dict[str, str] = {}  # tree families: a new conversation's root, when create named it
        self.cleaner = Cleaner(self)
        self.inline_below = _INLINE_RTT
        self.spares = Spares(
            prefetch, create=self._create_spare, model=lambda: self.session.model, run=self.cleaner.call,
            delete=self.delete, wait=self.timeout.connect + self.timeout.read,
        )

    @property
    def model(self) -> str:
        return self.session.model

    def running(self) -> list[Turn]:
        """The turns started and not yet cleaned up."""
        with self._lock:
            return list(self._turns)

    # -- what a turn asks (_lifecycle.Transport) -----------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ValueError("this Client is closed")

    def track(self, turn: Turn) -> None:
        with self._lock:
            self._turns.add(turn)

    def untrack(self, turn: Turn) -> None:
        with self._lock:
            self._turns.discard(turn)

    def family(self, abort: Abort) -> _protocol.Family:
        return self.session.family(abort)

    def accept_settings(self, abort: Abort) -> None:
        self.session.establish(abort)

    def take_spare(self, model: str) -> str | None:
        return self.spares.take(model)

    def refill(self, after: threading.Event) -> None:
        self.spares.refill(after)

    def create_conversation(self, model: str, abort: Abort, preprompt: str | None = None) -> str:
        body: dict[str, Any] = dict(_protocol.create_payload(model))
        if preprompt is not None:
            body["preprompt"] = preprompt
        try:
            if self.session.established:  # the common case, without a context manager's worth of work
                response = self.session.request(
                    "POST", _protocol.CONVERSATION_PATH, json_body=body, idempotent=False, abort=abort,
                )
            else:
                with self.session.minting(abort):  # 0.10: the first create makes the session
                    response = self.session.request(
                        "POST", _protocol.CONVERSATION_PATH, json_body=body, idempotent=False, abort=abort,
                    )
        except APIStatusError as exc:
            self.session.recheck(exc, abort)  # a family remembered for the URL may be wrong: nothing was made
            name_the_model(exc, model, "create a conversation")
            raise
        answer = response.json()
        conversation_id = _protocol.parse_conversation_id(answer)
        self.session.confirm()
        if isinstance(answer, Mapping) and "conversation" in answer:
            # chat-ui HEAD's create answer carries the conversation; it also follows a generation
            # again after a dropped connection (GET /conversation/{id}/stream). v0.10.0 does neither.
            self.resumable = True
        root = _root_from_create(answer)
        if root is not None:
            with self._lock:
                self._roots[conversation_id] = root
        return conversation_id

    def leaf(self, conversation_id: str, abort: Abort) -> str:
        with self._lock:
            root = self._roots.pop(conversation_id, None)
        if root is not None:
            return root
        branch = self._read_branch(conversation_id, abort=abort)
        if not branch:
            raise ProtocolError(f"conversation {conversation_id} has no root message to answer under"
                                f"{self.session.family_hint()}")
        return branch[-1]["id"]

    def read_back(self, conversation_id: str, deadline: float) -> list[dict[str, str]] | None:
        try:
            return self._read_branch(conversation_id, deadline=deadline)
        except H2oError as exc:
            logger.warning("could not read back conversation %s: %s", conversation_id, exc)
            return None

    def _read_branch(
        self, conversation_id: str, *, abort: Abort | None = None, deadline: float | None = None
    ) -> list[dict[str, str]]:
        """The current branch the server stored, root first (bounded in size)."""
        return self._read(conversation_id, abort=abort, deadline=deadline)[1]

    def _read(
        self, conversation_id: str, *, abort: Abort | None = None, deadline: float | None = None
    ) -> tuple[Mapping[str, Any], list[dict[str, str]]]:
        """A stored conversation's data (``title``, ``preprompt``, ...) and its current branch."""
        family = self.session.family(abort or Abort())
        if family.read_back == "api2":
            path = f"/api/v2/conversations/{quote(conversation_id, safe='')}"
        else:
            path = _protocol.conversation_path(conversation_id) + "/__data.json"
        try:
            body = self.session.read(path, _readback.MAX_READ_BACK, headers=_ANY_ACCEPT, abort=abort,
                                     deadline=deadline)
        except APIStatusError as exc:
            self.session.doubt(exc)
            raise
        if len(body) > _readback.MAX_READ_BACK:
            raise ProtocolError(f"conversation {conversation_id} is larger than {_readback.MAX_READ_BACK} bytes")
        try:
            if family.read_back == "api2":
                data = _readback.conversation_from_api2(body)
            else:
                data = _readback.conversation_from_page(body)
        except ProtocolError as exc:
            if self.session.protocol != "auto":
                add_to_message(exc, self.session.family_hint())
            self.session.doubt(exc)
            raise
        return data, _readback.branch([m for m in data["messages"] if isinstance(m, dict)])

    def open_prompt(self, conversation_id: str, prompt: Prompt, abort: Abort) -> StreamBody:
        family = self.session.known_family
        assert family is not None
        path = _protocol.conversation_path(conversation_id)
        payload = family.body(prompt)
        headers = dict(_STREAM_ACCEPT)
        data = None
        json_body: Any = payload
        if family.multipart:
            # A form content type: chat-ui's hook wants an Origin of this host (protocol-eras.md 1).
            data, content_type = multipart_body(payload, prompt.files)
            json_body = None
            parts = urlsplit(self._http.base_url)
            headers.update({"Content-Type": content_type, "Origin": f"{parts.scheme}://{parts.netloc}",
                            "Referer": self._http.base_url + path})
        try:
            body = self.session.stream(
                "POST",
                path,
                json_body=json_body,
                data=data,
                headers=headers,
                idempotent=False,
                follow=False,  # never re-post a prompt elsewhere (11.13)
                abort=abort,
            )
        except APIStatusError as exc:
            self.session.doubt(exc)
            raise
        content_type = body.content_type
        if content_type in ("application/json", "text/html"):
            text = body.read_text()
            error = ProtocolError(
                f"POST {path} answered {content_type} where a reply stream was expected: {text[:200]!r}; is the "
                f"server chat-ui {family.releases} (protocol {family.name!r})? protocol='auto' detects it",
                conversation_id=conversation_id,
            )
            self.session.doubt(error)
            raise error
        return body

    def reattach(self, conversation_id: str, generation_id: str, seen: int, abort: Abort) -> StreamBody | None:
        if not self.resumable:
            return None
        path = (f"{_protocol.conversation_path(conversation_id)}/stream?generationId={quote(generation_id, safe='')}"
                f"&fromSeq={seen}")
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(seen)}
        return self.session.stream("GET", path, headers=headers, idempotent=True, follow=False, abort=abort)

    def cleanup_request(self, method: str, path: str, deadline: float, json_body: Any = None) -> None:
        # Cleanup still runs after close(), for the streams close() aborted; it
        # must not leave a reopened pool behind.
        try:
            self.session.request(method, path, deadline=deadline, json_body=json_body)
        finally:
            if self.closed:
                self._http.close()

    def defer(self, conversation_id: str, steps: Sequence[Step]) -> None:
        rtt = self._http.rtt
        inline = rtt is not None and rtt < self.inline_below and not self.closed
        self.cleaner.submit(conversation_id, steps, inline=inline)

    # -- the account's conversations (issue 21) ----------------------------------------------

    def list_conversations(self, limit: int | None) -> list[ConversationInfo]:
        """The session's conversations, newest first, across the server's pages."""
        session = self.session
        family = session.family(Abort())
        found: list[ConversationInfo] = []
        if family.listing == "layout":
            body = session.read("/__data.json", _readback.MAX_READ_BACK, headers=_ANY_ACCEPT)
            found = [_info(c) for c in _readback.conversations_from_layout(body)]
            return found[:limit] if limit is not None else found
        page = 0
        while limit is None or len(found) < limit:
            if family.listing == "api":
                items = _readback.conversations_from_api(session.request("GET", f"/api/conversations?p={page}").json())
                more = len(items) >= _API_PAGE
            else:
                items, more = _readback.conversations_from_api2(
                    session.request("GET", f"/api/v2/conversations?p={page}").json())
            found.extend(_info(c) for c in items)
            if not more or not items or page >= _MAX_PAGES:
                break
            page += 1
        return found[:limit] if limit is not None else found

    def read_conversation(self, conversation_id: str) -> tuple[Mapping[str, Any], list[dict[str, str]]]:
        """A stored conversation: its data (``title``, ``preprompt``, ...) and its current branch.

        Raises:
            NotFoundError, ProtocolError: No such conversation in this session.
        """
        return self._read(conversation_id)

    def read_messages(self, conversation_id: str) -> tuple[_protocol.Family, list[dict[str, Any]]]:
        """The server's family and every message of a stored conversation (every branch), as stored."""
        data, _ = self._read(conversation_id)
        family = self.session.known_family
        assert family is not None
        return family, [m for m in data["messages"] if isinstance(m, dict)]

    def rename(self, conversation_id: str, title: str) -> None:
        """``PATCH /conversation/{id}`` with the new title (every release)."""
        self.session.request("PATCH", _protocol.conversation_path(conversation_id), json_body={"title": title},
                             idempotent=True)

    def switch_model(self, conversation_id: str, model: str) -> None:
        """``PATCH /conversation/{id}`` with ``{"model"}`` (v0.9.3 on).

        Raises:
            UnsupportedError: The family cannot (before any request).
        """
        family = self.session.family(Abort())
        if not family.patch_model:
            raise UnsupportedError(
                f"chat-ui {family.releases} (protocol {family.name!r}) cannot switch a conversation's model "
                "(PATCH {\"model\"} came in v0.9.3): start a new conversation with model=..."
            )
        try:
            self.session.request("PATCH", _protocol.conversation_path(conversation_id), json_body={"model": model})
        except APIStatusError as exc:
            name_the_model(exc, model, "switch the conversation to")
            raise

    def delete_all(self) -> int:
        """Delete every conversation of the session, as the web UI's "delete all" does; how many."""
        session = self.session
        family = session.family(Abort())
        if family.delete_all == "api2":
            document = session.request("DELETE", "/api/v2/conversations").json()
            count = document.get("json") if isinstance(document, Mapping) else document
            if not isinstance(count, int) or isinstance(count, bool):
                raise ProtocolError(f"DELETE /api/v2/conversations did not say how many: {str(document)[:200]!r}")
            return count
        count = len(self.list_conversations(None))  # the form action says nothing of it
        session.establish(Abort())  # the action is behind the welcome modal
        parts = urlsplit(self._http.base_url)
        session.request("POST", "/conversations?/delete", form={}, follow=False,  # its 303 is the answer
                        headers={"Origin": f"{parts.scheme}://{parts.netloc}", "Referer": self._http.base_url + "/"})
        return count

    def delete_now(self, conversation_id: str) -> None:
        """Delete a conversation and wait for the answer (raises what the server refuses)."""
        self.session.request("DELETE", _protocol.conversation_path(conversation_id))

    # -- the client's own -------------------------------------------------------------------

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation in the background (``close()`` waits for it); never raises."""
        self.defer(conversation_id, [delete_step(conversation_id)])

    def _create_spare(self, abort: Abort) -> str:
        self.session.establish(abort)
        return self.create_conversation(self.session.model, abort)


def _info(entry: Mapping[str, Any]) -> ConversationInfo:
    """A listed conversation, whatever the release names its fields."""
    conversation_id = entry.get("id", entry.get("_id"))
    model = entry.get("model", entry.get("modelId"))
    updated = entry.get("updatedAt")
    return ConversationInfo(
        id=str(conversation_id), title=str(entry.get("title") or ""),
        model=model if isinstance(model, str) else None, updated_at=updated if isinstance(updated, str) else None,
    )


def _root_from_create(answer: Any) -> str | None:
    """The root message id, when the create answer carries the conversation (chat-ui HEAD, 2026-07)."""
    seeded = answer.get("conversation") if isinstance(answer, Mapping) else None
    if not isinstance(seeded, str):
        return None
    try:
        document = json.loads(seeded)
    except (ValueError, RecursionError):
        return None
    data = document.get("json", document) if isinstance(document, Mapping) else None
    root = data.get("rootMessageId") if isinstance(data, Mapping) else None
    return root if isinstance(root, str) and root else None
