"""chat-ui HEAD's resumable generations (issue 21): a dropped connection is followed again through
``GET /conversation/{id}/stream`` without sending the prompt again, and a stop carries the point the
caller saw. Against the "0.10" emulator (HEAD by default) over real sockets, its replay against the
captures of the real HEAD, and the stream's reading of a replay on its own."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import anyio
import pytest

import h2o_sdk
from h2o_sdk import AsyncClient, Client, IncompleteStreamError, Stream
from h2o_sdk.testing import Fault, serve

from .captures import load

REPLY = "Rivers run to the sea and the sea never fills, 🙂 said the old sailor."


def prompts(server: Any) -> list[str]:
    return [p for m, p in server.paths() if m == "POST" and re.fullmatch(r"/conversation/[0-9a-f]{24}", p)]


def replays(server: Any) -> list[str]:
    return [p for m, p in server.paths() if m == "GET" and "/stream?" in p]


def test_a_dropped_connection_is_followed_again_without_sending_the_prompt_again() -> None:
    with serve(protocol="0.10", pace=0.01, reply=REPLY) as server, Client(server.url) as client, \
            client.conversation() as conversation:
        server.inject(Fault(drop_after=4))
        with conversation.stream("Tell me about rivers") as stream:
            pieces = list(stream)
        assert stream.reply is not None and stream.reply.text == REPLY == "".join(pieces)
        assert len(prompts(server)) == 1
        (replay,) = replays(server)
        assert re.search(r"generationId=[0-9a-f-]{36}&fromSeq=\d+$", replay)
        assert conversation.history[-1] == {"role": "assistant", "content": REPLY}
        # The next turn goes on as usual.
        assert conversation.chat("And then?").text == REPLY
    assert server.live_conversations == 0


def test_events_after_a_drop_are_neither_lost_nor_repeated() -> None:
    with serve(protocol="0.10", pace=0.01, reply=REPLY) as server, Client(server.url) as client:
        server.inject(Fault(drop_after=3))
        with client.stream("Tell me about rivers [[chat-ui:reasoning]]") as stream:
            events = [e for e in stream.events() if not (isinstance(e, h2o_sdk.Status) and e.status == "keepAlive")]
        starts = [e for e in events if isinstance(e, h2o_sdk.Status) and e.status == "started"]
        titles = [e for e in events if isinstance(e, h2o_sdk.Title)]
        reasoning = [e for e in events if isinstance(e, h2o_sdk.Reasoning)]
        assert len(starts) == 1 and len(titles) == 1 and len(reasoning) == 3
        assert "".join(e.text for e in events if isinstance(e, h2o_sdk.Token)) == REPLY
        assert len(replays(server)) == 1
    assert server.live_conversations == 0


def test_every_drop_of_a_long_reply_is_followed_again() -> None:
    with serve(protocol="0.10", pace=0.01, reply=REPLY) as server, Client(server.url) as client:
        server.inject(Fault(drop_after=2))
        with client.stream("Hi") as stream:
            assert "".join(stream) == REPLY
        assert len(replays(server)) == 1


def test_a_stop_keeps_exactly_what_the_caller_saw() -> None:
    # The emoji counts two UTF-16 code units, as JavaScript counts seenContentLength.
    reply = "🙂🙂 rivers run far and wide, past hills and towns, to the open sea at last."
    with serve(protocol="0.10", pace=0.02, reply=reply) as server, Client(server.url) as client, \
            client.conversation() as conversation:
        seen = ""
        with conversation.stream("Hi") as stream:
            for index, text in enumerate(stream):
                seen += text
                if index == 3:
                    break
        assert seen and reply.startswith(seen) and seen != reply
        assert conversation.history[-1] == {"role": "assistant", "content": seen}
        stored = server.conversation(conversation.id or "")
        assert stored is not None and stored["messages"][-1]["content"] == seen


def test_the_tagged_v0_10_0_cannot_follow_again_and_the_drop_stays_an_error() -> None:
    with serve(protocol="0.10", pace=0.01, reply=REPLY, release="v0.10.0") as server, Client(server.url) as client:
        server.inject(Fault(drop_after=3))
        with pytest.raises(IncompleteStreamError) as info:
            client.chat("Hi")
        assert info.value.text and REPLY.startswith(info.value.text)
        assert replays(server) == []
        assert client.wait_cleanup() and server.live_conversations == 0


def test_the_async_client_follows_a_drop_again() -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as client:
            server.inject(Fault(drop_after=3))
            assert (await client.chat("Hi")).text == REPLY

    with serve(protocol="0.10", pace=0.01, reply=REPLY) as server:
        anyio.run(main)
        assert len(replays(server)) == 1 and server.live_conversations == 0


# -- the emulator's replay against the real HEAD's ------------------------------------------------


def _get(url: str, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def _events(body: bytes) -> list[dict[str, str]]:
    out = []
    for block in body.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields and ":" not in fields.get("", ""):
            out.append(fields)
    return out


@pytest.mark.parametrize("capture_name", ["head_stream_reattach_finished"])
def test_the_replay_of_a_finished_run_is_framed_as_the_real_heads(capture_name: str) -> None:
    captured = load("chat-ui-HEAD-c100c162", capture_name)
    theirs = [e for e in _events(captured.body) if "event" in e]
    with serve(protocol="0.10", pace=0.01, reply="Hello! I am a fake h2oGPT.") as server, \
            Client(server.url, cookies={"hf-chat": "replay-check"}) as client:
        with client.conversation(keep=True) as conversation:
            seen = ""
            with conversation.stream("Tell me a story") as stream:
                for index, text in enumerate(stream):
                    seen += text
                    if index == 3:
                        break
        ((_, generation),) = [key for key in server._runs if key[0] == conversation.id]
        response, body = _get(server.url, f"/conversation/{conversation.id}/stream?generationId={generation}&fromSeq=0",
                              {"Cookie": "hf-chat=replay-check", "Accept": "*/*"})
        conversation.delete()
    assert response.status == 200
    for header in ("content-type", "cache-control", "x-accel-buffering"):
        assert response.getheader(header) == captured.header(header)
    ours = [e for e in _events(body) if "event" in e]
    # The same frames: numbered updates from 1, then the end with the run's status.
    assert [e["event"] for e in ours][-1] == [e["event"] for e in theirs][-1] == "end"
    assert json.loads(ours[-1]["data"]) == json.loads(theirs[-1]["data"]) == {"status": "interrupted"}
    assert [int(e["id"]) for e in ours[:-1]] == list(range(1, len(ours)))
    kinds = [json.loads(e["data"])["type"] for e in ours[:-1]]
    assert kinds[:2] == [json.loads(e["data"])["type"] for e in theirs[:2]] == ["status", "title"]
    assert kinds[-2:] == [json.loads(e["data"])["type"] for e in theirs[-3:-1]] == ["finalAnswer", "status"]
    final = json.loads(ours[-3]["data"])
    assert final == {"type": "finalAnswer", "text": seen, "interrupted": True}  # clamped to what was seen
    assert all("\\u0000" not in e["data"] for e in ours)  # kept without the padding


def test_an_unknown_generation_is_gone_as_the_real_heads() -> None:
    captured = load("chat-ui-HEAD-c100c162", "head_stream_unknown_generation")
    with serve(protocol="0.10", pace=0) as server, Client(server.url, cookies={"hf-chat": "gone-check"}) as client, \
            client.conversation(keep=True) as conversation:
        conversation.chat("Hi")
        response, body = _get(server.url, f"/conversation/{conversation.id}/stream?generationId=nope&fromSeq=0",
                              {"Cookie": "hf-chat=gone-check"})
        conversation.delete()
    assert response.status == 200 and body == captured.body


# -- the stream reading a replay, on its own ---------------------------------------------------------


class _Body:
    def __init__(self, chunks: Iterable[bytes | BaseException]) -> None:
        self._chunks = chunks

    def chunks(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk


class _HeadExchange:
    """A HEAD turn whose first answer drops, and whose replay is ``replay``."""

    conversation_id = "c"
    aborted = False
    stream_format = "jsonl"
    final_prefix = ""
    seen_text = ""

    def __init__(self, first: list[bytes | BaseException], replay: list[bytes]) -> None:
        self.first, self.replay = first, replay
        self.asked: list[int] = []
        self.outcome: str | None = None

    def open(self) -> _Body:
        return _Body(self.first)

    def reattach(self, seen: int) -> _Body | None:
        self.asked.append(seen)
        return _Body(self.replay) if len(self.asked) == 1 else None

    def abort(self) -> bool:
        return True

    def finish(self, outcome: str | None, drain: Any) -> str | None:
        self.outcome = outcome
        return None


def _update(seq: int, update: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: update\ndata: %s\n\n" % (seq, json.dumps(update).encode())


FIRST: list[bytes | BaseException] = [
    b'{"type":"status","status":"started"}\n', b'{"type":"status","status":"keepAlive"}\n',
    b'{"type":"stream","token":"Hello\\u0000\\u0000"}\n', b'{"type":"stream","tok']
REPLAYED = [_update(1, {"type": "status", "status": "started"}), _update(2, {"type": "stream", "token": "Hello"}),
            b": heartbeat\n\n", _update(3, {"type": "stream", "token": " world"}),
            _update(4, {"type": "finalAnswer", "text": "Hello world", "interrupted": False}),
            b'event: end\ndata: {"status":"completed"}\n\n']


def test_the_stream_asks_from_the_updates_it_has_and_skips_what_it_saw() -> None:
    exchange = _HeadExchange(FIRST, REPLAYED)
    stream = Stream(exchange)  # type: ignore[arg-type]
    assert list(stream) == ["Hello", " world"]
    assert exchange.asked == [2]  # started and one token; keepAlive is not counted
    assert stream.reply is not None and stream.reply.text == "Hello world" and exchange.outcome == "final"


def test_a_run_the_server_no_longer_has_is_an_incomplete_stream() -> None:
    exchange = _HeadExchange(FIRST, [b'event: end\ndata: {"status":"gone"}\n\n'])
    stream = Stream(exchange)  # type: ignore[arg-type]
    with pytest.raises(IncompleteStreamError, match="no longer has the generation") as info:
        list(stream)
    assert info.value.text == "Hello" and exchange.outcome == "lost"


def test_a_replay_that_drops_too_is_followed_again_until_the_turn_gives_up() -> None:
    exchange = _HeadExchange(FIRST, [_update(2, {"type": "stream", "token": "Hello"}), b"id: 3\nevent: upd"])
    stream = Stream(exchange)  # type: ignore[arg-type]
    with pytest.raises(IncompleteStreamError):
        list(stream)
    assert exchange.asked == [2, 2]  # the second ask gets None: the turn's limit, here at once


def test_an_abort_while_a_run_is_followed_again_ends_the_stream() -> None:
    with serve(protocol="0.10", pace=0.05, reply=REPLY) as server, Client(server.url) as client:
        server.inject(Fault(drop_after=2))
        stream = client.stream("Hi")
        got: list[str] = []
        caught: list[BaseException] = []

        def read() -> None:
            try:
                for text in stream:
                    got.append(text)
            except BaseException as exc:  # looked at below
                caught.append(exc)

        thread = threading.Thread(target=read)
        thread.start()
        end = time.monotonic() + 10
        while not replays(server) and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.1)
        stream.abort()
        thread.join(10)
        assert len(caught) == 1 and isinstance(caught[0], IncompleteStreamError)
        assert client.wait_cleanup()
        end = time.monotonic() + 10
        while server.live_conversations and time.monotonic() < end:
            time.sleep(0.02)
        assert server.live_conversations == 0
