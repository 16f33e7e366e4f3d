"""Cleanup off the caller's path (issue 14): the background cleaner, close() and interpreter exit."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio
import pytest

from h2o_sdk import AsyncClient, Client, Timeout
from h2o_sdk.testing import ChatServer, Fault, serve

from .test_live import REPLY, steps


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve(pace=0, reply=REPLY) as s:
        yield s
        assert s.live_conversations == 0


def background(client: Client) -> Client:
    """Cleanup in the background even on loopback, where the client would send it inline."""
    client._operations.inline_below = 0.0
    return client


def answered(server: ChatServer, method: str) -> int:
    return sum(1 for m, _ in server.paths() if m == method)


def test_a_chat_returns_before_its_delete_is_answered(server: ChatServer) -> None:
    server.inject(Fault(step="delete", delay=1.5))
    with background(Client(server.url)) as client:
        assert client.chat("Hi").text == REPLY
        assert answered(server, "DELETE") == 0  # returned while the delete was still under way
        assert server.live_conversations == 1
        assert client.wait_cleanup()
        assert answered(server, "DELETE") == 1 and server.live_conversations == 0


def test_break_returns_before_the_stop_is_answered_and_both_still_go_out(server: ChatServer) -> None:
    server.pace = 0.05
    server.inject(Fault(step="stop", delay=1.5))
    with background(Client(server.url)) as client:
        for _ in client.stream("Hi"):
            break
        assert answered(server, "POST") == 3  # settings, create, prompt: the stop is not answered yet
    assert steps(server)[-2:] == ["stop", "delete"]  # close() waited for both, in order


def test_close_waits_for_the_pending_deletes_within_the_cleanup_deadline(caplog: pytest.LogCaptureFixture) -> None:
    with serve(pace=0, reply=REPLY) as server:
        server.inject(Fault(step="delete", delay=20))
        client = background(Client(server.url, timeout=Timeout(cleanup=1)))
        client.chat("Hi")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="h2o_sdk"):
            client.close()
        assert time.monotonic() - started < 10  # not the 20 s the delete hangs
        assert "still pending" in caplog.text


def test_interpreter_exit_waits_for_the_pending_deletes(server: ChatServer) -> None:
    # A script that never closes its client: the delete still happens, at exit.
    server.inject(Fault(step="delete", delay=0.5))
    code = f"import h2o_sdk; print(h2o_sdk.Client({server.url!r}).chat('Hi').text)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == REPLY, done.stderr
    assert answered(server, "DELETE") == 1 and server.live_conversations == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_async_chat_returns_before_its_delete_is_answered(server: ChatServer, anyio_backend: str) -> None:
    server.inject(Fault(step="delete", delay=1.5))
    async with AsyncClient(server.url) as client:
        background(client.client)
        assert (await client.chat("Hi")).text == REPLY
        assert answered(server, "DELETE") == 0
        assert await client.wait_cleanup()
        assert server.live_conversations == 0
    await anyio.lowlevel.checkpoint()


def test_the_cleaner_thread_ends_with_close(server: ChatServer) -> None:
    import threading

    client = background(Client(server.url))
    client.chat("Hi")
    client.close()
    assert not [t for t in threading.enumerate() if t.name == "h2o-sdk-cleaner"]


def test_cleanup_is_sent_inline_where_round_trips_are_short(server: ChatServer) -> None:
    with Client(server.url) as client:
        client.chat("Hi")  # settings, create and the first delete measure the round trip
        assert client.wait_cleanup() and client._http.rtt is not None
        client._operations.inline_below = client._http.rtt + 1.0  # loopback counts as short, however busy
        client.chat("Hi")
        assert answered(server, "DELETE") == 2  # no wait needed: sent before chat() returned
        client._operations.inline_below = 0.0  # and as long, once it is not
        server.inject(Fault(step="delete", delay=1.5))
        client.chat("Hi")
        assert answered(server, "DELETE") == 2  # returned before the third delete was answered


# -- prefetch and connect() --------------------------------------------------------------


def test_prefetch_sends_the_prompt_at_once_and_refills_while_the_reply_streams(server: ChatServer) -> None:
    with Client(server.url, prefetch=1) as client:
        client.connect()  # settings, and one conversation created ahead
        assert steps(server) == ["settings", "conversation"]
        spare = client._operations.spares.ids[0]
        reply = client.chat("Hi")
        assert reply.conversation_id == spare  # the prompt went out on the spare: no create first
        assert client.wait_cleanup()
        # settings, ahead; then the prompt, a new spare made meanwhile, the delete
        assert sorted(steps(server)[2:]) == ["conversation", "delete", "prompt"]
        assert steps(server)[2] == "prompt" and server.live_conversations == 1  # the new spare
    assert steps(server)[-1] == "delete" and server.live_conversations == 0  # close() deleted the spare


def test_prefetch_serves_conversations_and_only_the_clients_model(server: ChatServer) -> None:
    from h2o_sdk.testing import MODELS

    server.models = (*MODELS, "other/model")
    with Client(server.url, prefetch=2) as client:
        client.connect()
        assert len(client._operations.spares) == 2
        with client.conversation() as conversation:
            conversation.chat("Hi")
            assert conversation.id in server._conversations
        assert client.chat("Hi", model="other/model").conversation_id not in client._operations.spares
        assert client.wait_cleanup()
    assert server.live_conversations == 0


def test_without_prefetch_nothing_is_created_ahead(server: ChatServer) -> None:
    with Client(server.url) as client:
        client.connect()
        assert steps(server) == ["settings"]  # the connection is open and the modal accepted
        client.chat("Hi")
        assert client.wait_cleanup()
        assert steps(server) == ["settings", "conversation", "prompt", "delete"]


def test_prefetch_must_be_a_whole_number() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="prefetch"):
            Client("http://127.0.0.1:1", prefetch=bad)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_async_connect_and_prefetch(server: ChatServer, anyio_backend: str) -> None:
    async with AsyncClient(server.url, prefetch=1) as client:
        await client.connect()
        spare = client.client._operations.spares.ids[0]
        assert (await client.chat("Hi")).conversation_id == spare
    assert server.live_conversations == 0


def test_with_prefetch_each_chat_finds_a_spare_made_while_the_last_reply_streamed(server: ChatServer) -> None:
    server.first_token_delay = 0.3  # a reply takes long enough for the create ahead to be done
    with Client(server.url, prefetch=1) as client:
        client.connect()
        for _ in range(4):
            spares = client._operations.spares.ids
            assert len(spares) == 1
            assert client.chat("Hi").conversation_id == spares[0]  # no create before this prompt
        assert client.wait_cleanup()
        creates = [i for i, name in enumerate(steps(server)) if name == "conversation"]
        prompts = [i for i, name in enumerate(steps(server)) if name == "prompt"]
        assert len(creates) == 5 and len(prompts) == 4  # one create ahead per chat, none on a chat's own path
