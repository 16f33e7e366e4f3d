"""``Conversation``: several turns in one server conversation, with its history."""

from __future__ import annotations

import mimetypes
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from . import _protocol
from ._exceptions import IncompleteStreamError
from ._lifecycle import Turn
from ._protocol import Attachment, Family, Prompt, _readback
from ._resource import Resource
from ._stream import Stream
from ._types import Reply

if TYPE_CHECKING:
    from ._operations import Operations

__all__ = ["Conversation", "FileInput", "load_files"]

#: What ``files=`` takes for one file: a path, or ``(name, bytes, mime type)``.
FileInput = Union[str, "os.PathLike[str]", tuple[str, bytes, str]]


def load_files(files: Sequence[FileInput] | None) -> tuple[Attachment, ...]:
    """Read ``files=`` into attachments, before any request.

    A path's MIME type is guessed from its name (``application/octet-stream``
    when unknown).

    Raises:
        TypeError: Not a list of paths or ``(name, bytes, mime)`` triples.
        ValueError: A file that cannot be read, or is empty (chat-ui drops
            empty files without a word).
    """
    if files is None:
        return ()
    if isinstance(files, (str, bytes, os.PathLike)) or (isinstance(files, tuple) and len(files) == 3
                                                        and isinstance(files[1], (bytes, bytearray))):
        raise TypeError("files must be a list of files (paths or (name, bytes, mime) triples), not one file")
    out = []
    for item in files:
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                raise ValueError(f"cannot read the file {path!r}: {exc.strerror or exc}") from exc
            name = os.path.basename(path)
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        elif isinstance(item, tuple) and len(item) == 3:
            name, data, mime = item
            if not isinstance(name, str) or not isinstance(mime, str) or not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"a file triple must be (name: str, data: bytes, mime: str), not {item!r:.80}")
            if not name.strip() or not mime.strip():
                raise ValueError("a file needs a name and a MIME type")
            data = bytes(data)
        else:
            raise TypeError(f"a file must be a path or a (name, bytes, mime) triple, not {type(item).__name__}")
        if not data:
            raise ValueError(f"the file {name!r} is empty: chat-ui drops empty files")
        out.append(Attachment(name, data, mime))
    return tuple(out)


class Conversation(Resource):
    """A multi-turn chat kept on the server. Make one with :meth:`Client.conversation`.

    Example::

        with client.conversation() as conversation:
            print(conversation.chat("Name three rivers."))
            for text in conversation.stream("Which is the longest?"):
                print(text, end="")
        print(conversation.history)

    Each turn sends only the new user text; the server builds the prompt from
    the history it stores (protocol.md 2.5). The server conversation is
    created with the first turn and deleted when the conversation is closed,
    unless ``keep=True``.

    :attr:`history` is what the server stored. From chat-ui 0.7 on it is read
    back from the server after every turn (the current branch of its message
    tree): the server keeps the user message even when generation fails, and
    0.8/0.9 go on generating after a stop, so the reply there is what the
    server had when it was read. With 0.4 a finished turn adds the user
    message and the reply; a turn the server failed (an error event, an HTTP
    error, a dropped stream) adds nothing; a turn cut short on this side
    (``break``, ``close()``, a timeout, Ctrl-C) adds the partial reply the
    server kept after stop-generating, read back from the server.

    One turn at a time; a conversation belongs to one thread at a time.
    """

    def __init__(
        self, operations: Operations, *, model: str | None, keep: bool, parameters: Mapping[str, Any],
        max_event_size: int, system_prompt: str | None = None,
    ) -> None:
        self._operations = operations
        self._max_event_size = max_event_size
        self._model = model
        self.keep = keep
        self._parameters = dict(parameters)
        self._system_prompt = system_prompt
        self._title: str | None = None
        self._id: str | None = None
        self._messages: list[dict[str, str]] = []  # role, content and the server's message id
        self._leaf: str | None = None  # tree families: the message the next one goes under
        self._busy = False
        self._closed = False
        self._lock = threading.Lock()

    def _open_existing(self, conversation_id: str) -> None:
        """Take up a conversation the server has: its history, title and system prompt, read back."""
        data, branch = self._operations.read_conversation(conversation_id)
        self._id = conversation_id
        title, preprompt, model = data.get("title"), data.get("preprompt"), data.get("model")
        self._title = title if isinstance(title, str) else None
        if isinstance(preprompt, str) and preprompt:
            self._system_prompt = preprompt
        if self._model is None and isinstance(model, str) and model:
            self._model = model
        self._take_branch(branch)

    def _take_branch(self, branch: list[dict[str, str]]) -> None:
        self._leaf = branch[-1]["id"] if branch else None
        self._messages = [m for m in branch if m["role"] in ("user", "assistant")]

    @property
    def title(self) -> str | None:
        """The conversation's title, as the server last said it; ``None`` before the server names one."""
        return self._title

    @property
    def system_prompt(self) -> str | None:
        """The conversation's system prompt (its ``preprompt`` from chat-ui 0.7 on); ``None`` if it has none."""
        return self._system_prompt

    def rename(self, title: str) -> None:
        """Give the server conversation a new title (``PATCH /conversation/{id}``).

        Raises:
            TypeError, ValueError: A title that is not a non-blank str, or no
                server conversation yet (before the first turn).
            H2oError: The server refused.
        """
        if not isinstance(title, str):
            raise TypeError(f"title must be a str, not {type(title).__name__}")
        if not title.strip():
            raise ValueError("title must not be blank")
        if self._id is None:
            raise ValueError("the conversation has no server conversation to rename before its first turn")
        self._operations.rename(self._id, title)
        self._title = title

    def delete(self) -> None:
        """Delete the server conversation now, even one opened or kept, and close this object.

        Raises:
            H2oError: The server refused (the conversation is still closed).
        """
        with self._lock:
            self._closed = True
            conversation_id, self._id = self._id, None
        if conversation_id is not None:
            self._operations.delete_now(conversation_id)

    @property
    def model(self) -> str:
        """The model of the conversation (the client's unless one was named).

        Setting it between turns switches the server conversation's model where
        the release can (``PATCH {"model"}``: chat-ui v0.9.3 on, families
        ``"0.9"`` and ``"0.10"``); before the first turn it names the model to
        create the conversation with, in every family.

        Raises (when set):
            TypeError, ValueError: Not a non-blank str, or a turn is streaming.
            UnsupportedError: The family cannot switch (before any request).
            H2oError: The server refused.
        """
        return self._model or self._operations.model

    @model.setter
    def model(self, model: str) -> None:
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, not {type(model).__name__}")
        if not model.strip():
            raise ValueError("model must not be empty")
        if self._busy:
            raise ValueError("a turn of this conversation is still streaming")
        if self._id is not None:
            self._operations.switch_model(self._id, model)
        self._model = model

    @property
    def id(self) -> str | None:
        """The server conversation's id; ``None`` until the first turn creates it."""
        return self._id

    @property
    def history(self) -> list[dict[str, str]]:
        """The turns so far as ``{"role", "content"}`` dicts (a copy)."""
        return [{"role": m["role"], "content": m["content"]} for m in self._messages]

    def stream(
        self, text: str, *, keep_tokens: bool | None = False, web_search: bool = False,
        files: Sequence[FileInput] | None = None, **parameters: Any,
    ) -> Stream:
        """Send the next user message and stream the reply.

        Args:
            text: The user's message.
            keep_tokens: Keep every :class:`Token` for ``stream.reply.tokens``
                (``None``: where tokens carry more than text, the ``"0.4"`` family).
            web_search: Let the server search the web first (chat-ui 0.7 to
                0.9): its progress arrives as :class:`WebSearch` events
                (:meth:`Stream.events`), the pages it used on ``reply.sources``.
            files: Files to attach (chat-ui 0.7 on): paths, or
                ``(name, bytes, mime)`` triples. 0.7 and 0.8 take images only
                (at most 224x224, and a production server takes a message of at
                most 512 KiB); 0.9 on take any file up to 10 MB.
                A file the server finds too large is an :class:`APIStatusError`
                (413) with its message.
            **parameters: Generation parameters for this turn, over the
                conversation's.

        Returns:
            A :class:`Stream`; nothing is sent until it is iterated.

        Raises:
            TypeError, ValueError: Blank text, a closed conversation, a file
                that cannot be read.
            UnsupportedError: ``web_search`` or ``files`` where the family has
                neither (here when the family is known, else before the prompt is sent).
        """
        _check_message(text)
        return self._turn(text, parameters, mode="send", keep_tokens=keep_tokens, web_search=web_search,
                          files=load_files(files))

    def chat(
        self, text: str, *, keep_tokens: bool | None = None, web_search: bool = False,
        files: Sequence[FileInput] | None = None, **parameters: Any,
    ) -> Reply:
        """Send the next user message and wait for the whole reply (arguments as :meth:`stream`)."""
        return finish(self.stream(text, keep_tokens=keep_tokens, web_search=web_search, files=files, **parameters))

    def retry_stream(self, *, keep_tokens: bool | None = False, **parameters: Any) -> Stream:
        """Regenerate the last reply (``is_retry``), streaming it.

        Raises:
            ValueError: There is no user message to answer again.
        """
        last_user = next((m for m in reversed(self._messages) if m["role"] == "user"), None)
        if last_user is None:
            raise ValueError("there is no turn to retry yet")
        return self._turn(last_user["content"], parameters, mode="retry", keep_tokens=keep_tokens)

    def retry(self, *, keep_tokens: bool | None = None, **parameters: Any) -> Reply:
        """Regenerate the last reply and wait for it."""
        return finish(self.retry_stream(keep_tokens=keep_tokens, **parameters))

    def continue_stream(self, *, keep_tokens: bool | None = False) -> Stream:
        """Extend the last reply where it stopped (``is_continue``: chat-ui 0.8 and 0.9), streaming the new text.

        ``reply.text`` is the new text; :attr:`history` then holds the whole reply.

        Raises:
            ValueError: The last message is not a reply (nothing to continue).
            UnsupportedError: The family cannot continue (v0.7 predates it,
                v0.10 ignores it and would store an empty message); before any request.
        """
        last = self._messages[-1] if self._messages else None
        if last is None or last["role"] != "assistant":
            raise ValueError("there is no reply to continue")
        return self._turn(last["content"], {}, mode="continue", keep_tokens=keep_tokens)

    def continue_(self, *, keep_tokens: bool | None = None) -> Reply:
        """Extend the last reply and wait for the new text (as :meth:`continue_stream`)."""
        return finish(self.continue_stream(keep_tokens=keep_tokens))

    def edit_stream(self, index: int, text: str, *, keep_tokens: bool | None = False) -> Stream:
        """Replace the user message ``history[index]`` and stream a new reply on a new branch (chat-ui 0.8 on).

        As the web UI's edit: the server keeps the old message and what
        followed it as another branch (:meth:`branches`, :meth:`switch`), and
        :attr:`history` follows the new one.

        Raises:
            IndexError: No message at ``index``.
            ValueError: ``history[index]`` is not a user message, or blank text.
            UnsupportedError: The family keeps no tree (0.4, 0.7); before any request.
        """
        _check_message(text)
        message = self._at(index)
        if message["role"] != "user":
            raise ValueError(f"history[{index}] is a reply: only a user message can be edited (retry() "
                             "regenerates a reply)")
        return self._turn(text, {}, mode="edit", keep_tokens=keep_tokens, target=message["id"])

    def edit(self, index: int, text: str, *, keep_tokens: bool | None = None) -> Reply:
        """Replace the user message ``history[index]`` and wait for the new reply (as :meth:`edit_stream`)."""
        return finish(self.edit_stream(index, text, keep_tokens=keep_tokens))

    def branches(self, index: int) -> list[dict[str, Any]]:
        """The versions of the message at ``history[index]`` the server keeps (chat-ui 0.8 on), oldest first.

        An edit makes another version of a user message, a retry another
        version of a reply. Reading changes nothing on the server.

        Returns:
            ``{"role", "content", "current"}`` dicts; ``current`` marks the
            one :attr:`history` shows.

        Raises:
            IndexError: No message at ``index``.
            UnsupportedError: The family keeps no tree.
            H2oError: The server refused, or the network failed.
        """
        message = self._at(index)
        messages = self._read_tree()
        return [{"role": m.get("from"), "content": m.get("content"), "current": m.get("id") == message["id"]}
                for m in _readback.siblings(messages, message["id"])]

    def switch(self, index: int, n: int) -> None:
        """Make version ``n`` of ``history[index]`` (as :meth:`branches` lists them) the current branch.

        :attr:`history` then follows that version and the newest line of
        messages below it, and the next turn goes there. Nothing changes on
        the server.

        Raises:
            IndexError: No message at ``index``, or no version ``n``.
            UnsupportedError: The family keeps no tree.
            H2oError: The server refused, or the network failed.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        message = self._at(index)
        messages = self._read_tree()
        versions = _readback.siblings(messages, message["id"])
        if not 0 <= n < len(versions):
            raise IndexError(f"history[{index}] has {len(versions)} versions, not a version {n}")
        chosen = versions[n].get("id")
        assert isinstance(chosen, str)
        self._take_branch(_readback.branch(messages, _readback.latest_leaf(messages, chosen)))

    def _at(self, index: int) -> dict[str, str]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, not {type(index).__name__}")
        if self._closed:
            raise ValueError("this conversation is closed")
        if self._id is None or not self._messages:
            raise IndexError("the conversation has no messages yet")
        if self._busy:
            raise ValueError("a turn of this conversation is still streaming")
        return self._messages[index]

    def _read_tree(self) -> list[dict[str, Any]]:
        """Every message of the server conversation (``UnsupportedError`` where the family keeps no tree)."""
        assert self._id is not None
        family, messages = self._operations.read_messages(self._id)
        family.check_options(edit=True)
        return messages

    def close(self) -> None:
        """Delete the server conversation unless ``keep=True`` (idempotent; logs failures)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conversation_id = self._id
        if conversation_id is not None and not self.keep:
            self._operations.delete(conversation_id)

    # -- the turn's owner (_lifecycle.Owner) --------------------------------

    def _server_id(self) -> str | None:
        return self._id

    def _turn_created(self, conversation_id: str) -> bool:
        with self._lock:
            self._id = conversation_id
            # Closed while the first turn created it: delete it, unless it is to be kept.
            return not self._closed or self.keep

    def _turn_begins(self) -> None:
        with self._lock:
            if self._busy:
                raise ValueError("a turn of this conversation is still streaming")
            if self._closed:
                raise ValueError("this conversation is closed")
            self._busy = True

    def _turn_ends(self) -> None:
        self._busy = False


    def __repr__(self) -> str:
        return f"<Conversation id={self._id!r} turns={len(self._messages) // 2}>"

    def _turn(
        self, text: str, parameters: Mapping[str, Any], *, mode: str, keep_tokens: bool | None,
        web_search: bool = False, files: tuple[Attachment, ...] = (), target: str | None = None,
    ) -> Stream:
        """One turn; ``mode``: ``"send"``, ``"retry"``, ``"edit"`` (of the user message ``target``), ``"continue"``."""
        if self._closed:
            raise ValueError("this conversation is closed")
        if web_search not in (True, False):
            raise TypeError(f"web_search must be a bool, not {web_search!r}")
        merged = {**self._parameters, **parameters}
        _protocol.check_text(text, "the prompt")  # bad text and parameters fail here, before any request
        _protocol.check_parameter_values(merged)
        retry = mode == "retry"
        options = {"web_search": web_search, "files": bool(files), "is_continue": mode == "continue",
                   "edit": mode == "edit"}
        if (known := self._operations.session.known_family) is not None:
            known.check_options(**options)
        message_id = str(uuid.uuid4())
        if retry:
            message_id = next(m["id"] for m in reversed(self._messages) if m["role"] == "user")

        system = self._system_prompt if self._id is None else None  # it goes with the create
        extra: dict[str, Any] = {"web_search": web_search, "files": files}

        def build(family: Family) -> tuple[Prompt, str | None]:
            family.check_parameters(merged)
            family.check_options(**options)
            inputs, preprompt = text, system
            if system is not None and not family.preprompt:
                # 0.4 keeps no preprompt: the first message carries it, in the seed's prompt format.
                inputs, preprompt = _protocol.format_prompt([{"role": "system", "content": system},
                                                             {"role": "user", "content": text}]), None
            if not family.tree:
                # The client names the user message; a retry replaces it and what follows.
                return Prompt(inputs, message_id=message_id, is_retry=retry, parameters=merged, **extra), preprompt
            last = self._messages[-1] if self._messages else None
            if mode == "continue" and last is not None:
                turn.final_prefix = last["content"] if family.continue_whole else ""
                return Prompt(None, parent_id=last["id"], is_continue=True), None
            if mode == "edit":
                # The edit button: the user message's id and the new text; the server adds a sibling.
                return Prompt(text, parent_id=target, is_retry=True, **extra), None
            if retry and last is not None and last["role"] == "assistant":
                # The retry button: the reply's id and no inputs; the answer becomes its sibling.
                return Prompt(None, parent_id=last["id"], is_retry=True), None
            if retry and last is not None:
                # The last reply failed and only the user message is stored: edit it.
                return Prompt(text, parent_id=last["id"], is_retry=True), None
            return Prompt(inputs, parent_id=self._leaf, **extra), preprompt

        # on_end must not refer to the stream: the cycle would keep an abandoned
        # stream (``break`` in a plain for loop) alive until the cyclic GC.
        def on_end(stored: str | None, reply: str, title: str | None) -> None:
            if title is not None:
                self._title = title
            if turn.branch is not None:
                self._take_branch(turn.branch)
                return
            if stored is None:
                return
            if retry:
                # is_retry keeps the history before the message and replaces the rest (2.5)
                index = next(i for i, m in enumerate(self._messages) if m.get("id") == message_id)
                del self._messages[index:]
            self._messages.append({"role": "user", "content": text, "id": message_id})
            self._messages.append({"role": "assistant", "content": reply, "id": ""})

        turn = Turn(self._operations, model=self._model, build=build, owner=self, keep_partial=True)
        return Stream(turn, max_event_size=self._max_event_size, keep_tokens=keep_tokens, on_end=on_end)


def _check_message(text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is blank: chat-ui rejects blank inputs")


def finish(stream: Stream) -> Reply:
    """Read ``stream`` to its end and return its reply."""
    with stream:
        for _ in stream.tokens():
            pass
    if stream.reply is None:  # unreachable: a stream only ends quietly with its reply
        raise IncompleteStreamError("the stream ended without a reply", text=stream.text)
    return stream.reply
