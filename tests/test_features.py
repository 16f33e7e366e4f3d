"""What a chat-ui account can do besides plain turns (issue 21, second part): typed events, web
search and its sources, files, continue, edit and branches; against the emulator of every family
over real sockets, and the pure pieces on their own."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import h2o_sdk
from h2o_sdk import APIStatusError, AsyncClient, Client, Token, UnsupportedError
from h2o_sdk._conversation import load_files
from h2o_sdk._protocol import Attachment, multipart_body
from h2o_sdk._protocol._readback import branch, latest_leaf, siblings
from h2o_sdk._protocol._updates import to_events
from h2o_sdk.testing import PROTOCOLS, ChatServer, serve

SEARCHING = ("0.7", "0.8", "0.9")
FILES = ("0.7", "0.8", "0.9", "0.10")
CONTINUING = ("0.8", "0.9")
TREES = ("0.8", "0.9", "0.10")


def png(width: int, height: int) -> bytes:
    """A real PNG image of that size (black pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x00" * width * 3 for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def posts(server: ChatServer) -> list[str]:
    return [p for m, p in server.paths() if m in ("POST", "PATCH", "DELETE")]


@pytest.fixture(params=PROTOCOLS)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(family: str) -> Iterator[ChatServer]:
    with serve(protocol=family, pace=0) as server:
        yield server


# -- pure: updates to events -------------------------------------------------------------


@pytest.mark.parametrize(("update", "expected"), [
    ({"type": "status", "status": "keepAlive"}, [h2o_sdk.Status("keepAlive")]),
    ({"type": "webSearch", "messageType": "update", "message": "Searching Google", "args": ["rivers"]},
     [h2o_sdk.WebSearch("update", "Searching Google", ("rivers",))]),
    ({"type": "webSearch", "subtype": "sources", "message": "sources",
      "sources": [{"link": "https://a.example/", "title": "A"}, {"title": "no link"}]},
     [h2o_sdk.WebSearch("sources", "sources", (), ({"title": "A", "url": "https://a.example/"},))]),
    ({"type": "webSearch", "subtype": "finished"}, [h2o_sdk.WebSearch("finished")]),
    ({"type": "tool", "subtype": "call", "uuid": "u1", "call": {"name": "calc", "parameters": {"x": 1}}},
     [h2o_sdk.ToolCall("u1", "calc", {"x": 1})]),
    ({"type": "tool", "subtype": "result", "uuid": "u1", "result": {"status": "success", "outputs": [{"v": 2}]}},
     [h2o_sdk.ToolResult("u1", "success", ({"v": 2},))]),
    ({"type": "tool", "subtype": "error", "uuid": "u1", "message": "boom"}, [h2o_sdk.ToolError("u1", "boom")]),
    ({"type": "tool", "subtype": "eta", "uuid": "u1", "eta": 3}, [h2o_sdk.Unknown("tool")]),
    ({"type": "reasoning", "subtype": "stream", "token": "hm"}, [h2o_sdk.Reasoning("stream", "hm")]),
    ({"type": "reasoning", "subtype": "status", "status": "Thinking"}, [h2o_sdk.Reasoning("status", "Thinking")]),
    ({"type": "file", "name": "a.png", "sha": "ab", "mime": "image/png"}, [h2o_sdk.File("a.png", "ab", "image/png")]),
    ({"type": "routerMetadata", "route": "code", "model": "m", "provider": "p"},
     [h2o_sdk.RouterMetadata("code", "m", "p")]),
    ({"type": "elicitation", "subtype": "request"}, [h2o_sdk.Unknown("elicitation")]),
])
def test_each_update_type_is_one_typed_event_with_its_raw_object(update: dict[str, Any], expected: list[Any]) -> None:
    events = to_events(update)
    assert events == expected
    assert all(event.raw is update for event in events)


def test_a_status_title_is_a_status_and_a_title() -> None:
    update = {"type": "status", "status": "title", "message": "Rivers"}
    assert to_events(update, "Rivers") == [h2o_sdk.Status("title", "Rivers"), h2o_sdk.Title("Rivers")]


# -- pure: files ----------------------------------------------------------------------------


def test_files_are_read_from_paths_and_triples(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"three rivers")
    files = load_files([path, str(path), ("pic.png", b"\x89PNG", "image/png")])
    assert files == (Attachment("notes.txt", b"three rivers", "text/plain"),
                     Attachment("notes.txt", b"three rivers", "text/plain"),
                     Attachment("pic.png", b"\x89PNG", "image/png"))
    (tmp_path / "blob.unknownext").write_bytes(b"x")
    assert load_files([tmp_path / "blob.unknownext"])[0].mime == "application/octet-stream"
    assert load_files(None) == ()


def test_bad_files_are_refused_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the file"):
        load_files([tmp_path / "missing.png"])
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_files([tmp_path / "empty.txt"])
    with pytest.raises(TypeError, match="list of files"):
        load_files(str(tmp_path / "x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of files"):
        load_files(("a", b"b", "c"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="triple"):
        load_files([("a", "not bytes", "text/plain")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        load_files([42])  # type: ignore[list-item]


def test_the_multipart_body_carries_each_file_as_the_web_ui_names_it() -> None:
    files = (Attachment('we"ird;name.txt', b"hello", "text/plain"), Attachment("a.png", b"\x89PNG", "image/png"))
    body, content_type = multipart_body({"inputs": "Hi"}, files)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["data", "files", "files"]
    assert parts[0].get_content() == '{"inputs":"Hi"}'
    assert parts[1].get_param("filename", header="content-disposition") == "base64;we%22ird;name.txt"
    assert parts[1].get_content_type() == "text/plain"
    assert base64.b64decode(parts[1].get_payload()) == b"hello"
    assert base64.b64decode(parts[2].get_payload()) == b"\x89PNG"


# -- pure: the message tree -------------------------------------------------------------------


def test_siblings_and_the_newest_line_below_a_message() -> None:
    messages = [
        {"id": "r", "from": "system", "content": "", "ancestors": [], "children": ["u1", "u2"]},
        {"id": "u1", "from": "user", "content": "one", "ancestors": ["r"], "children": ["a1"]},
        {"id": "a1", "from": "assistant", "content": "A1", "ancestors": ["r", "u1"], "children": []},
        {"id": "u2", "from": "user", "content": "two", "ancestors": ["r"], "children": ["a2", "a3"]},
        {"id": "a2", "from": "assistant", "content": "A2", "ancestors": ["r", "u2"], "children": []},
        {"id": "a3", "from": "assistant", "content": "A3", "ancestors": ["r", "u2"], "children": []},
    ]
    assert [m["id"] for m in siblings(messages, "u2")] == ["u1", "u2"]
    assert [m["id"] for m in siblings(messages, "a3")] == ["a2", "a3"]
    assert [m["id"] for m in siblings(messages, "r")] == ["r"]
    assert siblings(messages, "nope") == []
    assert latest_leaf(messages, "u1") == "a1"
    assert latest_leaf(messages, "u2") == "a3"
    assert [m["id"] for m in branch(messages, "a1")] == ["r", "u1", "a1"]
    assert [m["id"] for m in branch(messages)] == ["r", "u2", "a3"]  # the last message: the current branch


# -- over sockets: events, web search -------------------------------------------------------


def test_events_carry_everything_and_iterating_still_yields_only_text(server: ChatServer, family: str) -> None:
    prompt = "Rivers [[chat-ui:tool]] [[chat-ui:reasoning]] [[chat-ui:router]] [[chat-ui:file]] [[chat-ui:unknown]]"
    with Client(server.url) as client:
        with client.stream(prompt) as stream:
            events = list(stream.events())
        assert stream.reply is not None
        text = "".join(e.text for e in events if isinstance(e, Token) and not e.special)
        assert text == stream.reply.text
        kinds = {type(e).__name__ for e in events}
        if family == "0.4":
            assert kinds == {"Token"}  # 0.4 streams TGI's tokens only
        else:
            assert {"Status", "Title", "Unknown"} <= kinds
            assert h2o_sdk.Status("started") in events
        if family == "0.9":
            assert {"ToolCall", "ToolResult", "File"} <= kinds and not {"Reasoning", "RouterMetadata"} & kinds
        if family == "0.10":
            assert {"ToolCall", "ToolResult", "File", "Reasoning", "RouterMetadata"} <= kinds
            call = next(e for e in events if isinstance(e, h2o_sdk.ToolCall))
            result = next(e for e in events if isinstance(e, h2o_sdk.ToolResult))
            assert call.uuid == result.uuid and result.status == "success"
        # Plain iteration of the same kind of stream: text only, nothing else.
        with client.stream(prompt) as stream:
            pieces = list(stream)
        assert all(isinstance(p, str) for p in pieces) and "".join(pieces) == stream.reply.text  # type: ignore[union-attr]
    assert server.live_conversations == 0


@pytest.mark.parametrize("family", SEARCHING)
def test_web_search_progress_and_sources(server: ChatServer) -> None:
    with Client(server.url) as client, client.conversation() as conversation:
        with conversation.stream("Longest river?", web_search=True) as stream:
            events = list(stream.events())
        searches = [e for e in events if isinstance(e, h2o_sdk.WebSearch)]
        assert searches[0].kind == "update" and searches[0].args == ("Longest river?",)
        found = next(e for e in searches if e.kind == "sources")
        assert stream.reply is not None and stream.reply.sources == found.sources
        assert [s["url"] for s in stream.reply.sources] == [
            "https://example.com/wiki/Longest%20river%3F", "https://example.org/news/Longest%20river%3F"]
        assert all(s["title"] for s in stream.reply.sources)
        # Without web_search nothing is searched.
        reply = conversation.chat("And the widest?")
        assert reply.sources == ()
    assert server.live_conversations == 0


@pytest.mark.parametrize("family", SEARCHING)
def test_a_search_that_fails_on_the_server_is_an_event_and_no_sources(family: str) -> None:
    with serve(protocol=family, pace=0, search=None) as server, Client(server.url) as client:
        with client.stream("News today?", web_search=True) as stream:
            events = list(stream.events())
        errors = [e for e in events if isinstance(e, h2o_sdk.WebSearch) and e.kind == "error"]
        assert len(errors) == 1 and "No" in errors[0].args[0]
        assert stream.reply is not None and stream.reply.text and stream.reply.sources == ()


@pytest.mark.parametrize("family", ["0.4", "0.10"])
def test_web_search_where_the_release_has_no_switch_is_refused_before_any_request(server: ChatServer) -> None:
    with Client(server.url) as client:
        # The family unknown: refused when the stream starts, before anything is created.
        with pytest.raises(UnsupportedError, match="web-search"), client.stream("Hi", web_search=True) as stream:
            next(iter(stream))
        assert posts(server) == [] and server.live_conversations == 0
        # The family known: refused at the call.
        with pytest.raises(UnsupportedError, match="web-search"):
            client.stream("Hi", web_search=True)
        with client.conversation() as conversation, pytest.raises(UnsupportedError):
            conversation.chat("Hi", web_search=True)
    assert posts(server) == []


# -- over sockets: files ----------------------------------------------------------------------


@pytest.mark.parametrize("family", FILES)
def test_files_are_stored_with_the_message(server: ChatServer, family: str, tmp_path: Path) -> None:
    image = tmp_path / "dot.png"
    image.write_bytes(png(8, 8))
    files: list[Any] = [image]
    if family in ("0.9", "0.10"):
        files.append(("notes.txt", b"the Nile is long", "text/plain"))  # 0.9 on take text files too
    with Client(server.url) as client, client.conversation(keep=True) as conversation:
        reply = conversation.chat("What is in these?", files=files)
        assert reply.text
        stored = server.conversation(conversation.id or "")
        assert stored is not None
        user = stored["messages"][-2]
        assert user["content"] == "What is in these?"
        # As the real releases hash a file: the sha-256 of its text (v0.7 and v0.9.4 on loopback).
        digests = ["4bf018d9a9bd214d76658c91084571588f745fb778d2f5bd4b3be7992fd23fa4"]
        if family in ("0.7", "0.8"):
            assert user["files"] == digests
        else:
            digests.append(hashlib.sha256(b"the Nile is long").hexdigest())
            assert user["files"] == [
                {"type": "hash", "value": digests[0], "mime": "image/png", "name": "dot.png"},
                {"type": "hash", "value": digests[1], "mime": "text/plain", "name": "notes.txt"}]
        conversation.delete()


@pytest.mark.parametrize("family", FILES)
def test_a_file_too_large_is_the_servers_413_with_its_text(server: ChatServer, family: str) -> None:
    big = ("big.png", png(300, 300), "image/png") if family in ("0.7", "0.8") else (
        "big.bin", b"x" * (10 * 1024 * 1024 + 1), "application/octet-stream")
    with Client(server.url) as client, client.conversation() as conversation:
        with pytest.raises(APIStatusError) as caught:
            conversation.chat("Look", files=[big])
        assert caught.value.status_code == 413
        assert "File too large" in str(caught.value)
        assert conversation.chat("Still here?").text  # the conversation goes on
    assert server.live_conversations == 0


@pytest.mark.parametrize("family", ["0.4"])
def test_files_in_0_4_are_refused_before_any_request(server: ChatServer) -> None:
    with Client(server.url) as client:
        client.detect_protocol()
        with pytest.raises(UnsupportedError, match="files"):
            client.chat("Hi", files=[("a.png", png(2, 2), "image/png")])
    assert posts(server) == []


# -- over sockets: continue, edit, branches ----------------------------------------------------


@pytest.mark.parametrize("family", CONTINUING)
def test_continue_extends_the_last_reply(server: ChatServer) -> None:
    with Client(server.url) as client, client.conversation() as conversation:
        first = conversation.chat("Tell me about rivers")
        with conversation.continue_stream() as stream:
            streamed = "".join(stream)
        assert stream.reply is not None
        more = stream.reply.text
        assert more and more == streamed  # the new text only, in every family
        assert conversation.history[-1] == {"role": "assistant", "content": first.text + more}
        assert len(conversation.history) == 2
        stored = server.conversation(conversation.id or "")
        assert stored is not None and stored["messages"][-1]["content"] == first.text + more
    assert server.live_conversations == 0


@pytest.mark.parametrize("family", ["0.4", "0.7", "0.10"])
def test_continue_where_the_release_cannot_is_refused_before_any_request(server: ChatServer) -> None:
    with Client(server.url) as client, client.conversation() as conversation:
        conversation.chat("Hi")
        before = posts(server)
        with pytest.raises(UnsupportedError, match="continue"):
            conversation.continue_()
        assert posts(server) == before
    with Client(server.url) as client, client.conversation() as conversation, pytest.raises(ValueError):
        conversation.continue_()  # nothing to continue yet


@pytest.mark.parametrize("family", TREES)
def test_edit_makes_a_branch_and_switch_goes_back(server: ChatServer) -> None:
    with Client(server.url) as client, client.conversation() as conversation:
        conversation.chat("First question")
        conversation.chat("Second question")
        original = conversation.history
        reply = conversation.edit(2, "Second, edited")
        assert conversation.history[:2] == original[:2]
        assert conversation.history[2:] == [{"role": "user", "content": "Second, edited"},
                                            {"role": "assistant", "content": reply.text}]
        assert conversation.branches(2) == [
            {"role": "user", "content": "Second question", "current": False},
            {"role": "user", "content": "Second, edited", "current": True}]
        assert conversation.branches(0) == [{"role": "user", "content": "First question", "current": True}]
        conversation.switch(2, 0)
        assert conversation.history == original
        assert [b["current"] for b in conversation.branches(2)] == [True, False]
        # The next turn goes under the branch switched to.
        conversation.chat("Third question")
        assert conversation.history[:4] == original
        stored = server.conversation(conversation.id or "")
        assert stored is not None
        assert [m["content"] for m in stored["messages"]][:4] == [m["content"] for m in original]
        # A retry is another version of the reply.
        conversation.retry()
        assert [b["current"] for b in conversation.branches(5)] == [False, True]
        with pytest.raises(IndexError):
            conversation.switch(2, 5)
        with pytest.raises(ValueError, match="reply"):
            conversation.edit(1, "not a user message")
    assert server.live_conversations == 0


@pytest.mark.parametrize("family", ["0.4", "0.7"])
def test_edit_and_branches_without_a_tree_are_refused(server: ChatServer) -> None:
    with Client(server.url) as client, client.conversation() as conversation:
        conversation.chat("Hi")
        before = posts(server)
        with pytest.raises(UnsupportedError, match="tree"):
            conversation.edit(0, "Hello")
        with pytest.raises(UnsupportedError, match="tree"):
            conversation.branches(0)
        with pytest.raises(UnsupportedError, match="tree"):
            conversation.switch(0, 0)
        assert posts(server) == before


# -- async twins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["0.9"])
def test_the_async_twins(server: ChatServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as client, client.conversation() as conversation:
            stream = conversation.stream("Nile? [[chat-ui:tool]]", web_search=True)
            async with stream:
                events = [e async for e in stream.events()]
            assert stream.reply is not None and stream.reply.sources
            assert any(isinstance(e, h2o_sdk.ToolCall) for e in events)
            assert "".join(e.text for e in events if isinstance(e, Token)) == stream.reply.text
            more = await conversation.continue_()
            assert conversation.history[-1]["content"].endswith(more.text)
            await conversation.chat("Amazon?", files=[("a.txt", b"amazon", "text/plain")])
            await conversation.edit(2, "Congo?")
            assert [b["current"] for b in await conversation.branches(2)] == [False, True]
            await conversation.switch(2, 0)
            assert conversation.history[2]["content"] == "Amazon?"

    anyio.run(main)
    assert server.live_conversations == 0


@pytest.mark.parametrize(("release", "family"), [("chat-ui-v0.7", "0.7"), ("chat-ui-v0.8.4", "0.8"),
                                                 ("chat-ui-v0.9.4", "0.9"), ("chat-ui-v0.10.0", "0.10")])
def test_the_emulator_stores_a_file_as_the_real_release_does(release: str, family: str) -> None:
    """The captured read-back after msg_file (an 8x8 PNG named dot.png) against the emulator's."""
    from h2o_sdk._protocol._readback import messages_from_api2, messages_from_page

    from .captures import load

    captured = load(release, "conv_read_after_file")
    messages = (messages_from_api2 if family == "0.10" else messages_from_page)(captured.body)
    theirs = next(m["files"] for m in messages if m.get("from") == "user" and m.get("files"))
    with serve(protocol=family, pace=0) as server, Client(server.url) as client, \
            client.conversation(keep=True) as conversation:
        conversation.chat("What is on this picture?", files=[("dot.png", png(8, 8), "image/png")])
        stored = server.conversation(conversation.id or "")
        assert stored is not None
        assert stored["messages"][-2]["files"] == theirs
        conversation.delete()


@pytest.mark.parametrize(("family", "limit"), [("0.7", 512 * 1024), ("0.8", 512 * 1024), ("0.9", 15 * 1024 * 1024)])
def test_a_body_over_the_servers_limit_is_a_413(family: str, limit: int) -> None:
    """adapter-node's BODY_SIZE_LIMIT, as the production builds answered on loopback."""
    size = limit * 3 // 4  # base64 makes it larger than the limit
    with serve(protocol=family, pace=0) as server, Client(server.url) as client, \
            client.conversation() as conversation:
        with pytest.raises(APIStatusError) as caught:
            conversation.chat("Look", files=[("big.bin", b"\x00" * size, "application/octet-stream")])
        assert caught.value.status_code == 413 and "Invalid request body" in str(caught.value)
        assert conversation.chat("Still here?").text
    assert server.live_conversations == 0
