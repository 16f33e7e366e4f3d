"""AsyncClient and the seed's H2o provider against the local server, on asyncio and trio."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

import h2o_sdk
from h2o_sdk import AsyncClient, GenerationError, H2o, IncompleteStreamError, UnprocessableEntityError, _async_client
from h2o_sdk.testing import ChatServer, Fault, serve

from .test_live import REPLY, WORDS, steps

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve(pace=0, reply=REPLY) as s:
        yield s
        assert s.live_conversations == 0


@pytest.fixture
async def client(server: ChatServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url) as c:
        yield c
    assert not reader_threads()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "h2o-sdk-stream"]


async def test_chat_stream_and_tokens(server: ChatServer, client: AsyncClient) -> None:
    reply = await client.chat("Hi", details=True)
    assert reply.text == REPLY and reply.finish_reason == "eos_token"
    assert [text async for text in client.stream("Hi")] == WORDS
    async with client.stream("Hi", keep_tokens=True) as stream:
        tokens = [token async for token in stream.tokens()]
    assert tokens[-1].special and stream.reply is not None and stream.reply.tokens == tuple(tokens)
    assert steps(server).count("delete") == 3


async def test_errors_are_the_blocking_clients(server: ChatServer, client: AsyncClient) -> None:
    with pytest.raises(ValueError):
        client.stream([])  # before any request
    server.inject(Fault(status=422))
    with pytest.raises(UnprocessableEntityError):
        await client.chat("Hi")
    server.inject(Fault(error_after=2))
    with pytest.raises(GenerationError) as info:
        await client.chat("Hi")
    assert info.value.text == "".join(WORDS[:2])


async def test_break_and_aclose_stop_and_delete(server: ChatServer, client: AsyncClient) -> None:
    server.pace = 0.05
    async with client.stream("Hi") as stream:
        async for _ in stream:
            break
    assert steps(server)[-2:] == ["stop", "delete"]
    await stream.aclose()  # idempotent


async def test_cancelling_a_silent_stream_is_prompt_and_cleans_up(server: ChatServer, client: AsyncClient) -> None:
    server.inject(Fault(stall=30, stall_after=2))
    seen = []
    started = time.monotonic()
    with anyio.move_on_after(0.3):
        async for text in client.stream("Hi"):
            seen.append(text)
    assert seen == WORDS[:2]
    assert time.monotonic() - started < 10  # did not wait for the 30 s stall
    assert steps(server)[-2:] == ["stop", "delete"]
    assert not reader_threads()


async def test_a_failing_task_group_cancels_the_stream(server: ChatServer, client: AsyncClient) -> None:
    server.inject(Fault(stall=30, stall_after=1))

    async def consume() -> None:
        async for _ in client.stream("Hi"):
            pass

    async def fail() -> None:
        await anyio.sleep(0.2)
        raise KeyError("boom")

    with pytest.raises(BaseException) as info:
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            group.start_soon(fail)
    assert "boom" in repr(info.value)
    assert steps(server)[-2:] == ["stop", "delete"]


async def test_asyncio_wait_for(server: ChatServer, client: AsyncClient, anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("asyncio.wait_for is asyncio's")
    server.inject(Fault(stall=30, stall_after=1))

    async def consume() -> None:
        async for _ in client.stream("Hi"):
            pass

    with pytest.raises(asyncio.TimeoutError):  # the builtin TimeoutError from 3.11 on
        await asyncio.wait_for(consume(), 0.3)
    assert steps(server)[-2:] == ["stop", "delete"]


async def test_slow_consumer_backpressure(server: ChatServer) -> None:
    server.reply = " ".join(["word"] * 3000)
    async with AsyncClient(server.url, buffer_size=8) as client, client.stream("Hi", max_new_tokens=5000) as stream:
        await stream.__anext__()
        await anyio.sleep(0.3)  # the reader thread runs ahead only as far as the buffer
        assert stream._feed is not None and len(stream._feed._buffer) <= 8
        count = 1 + len([text async for text in stream])
    assert count == 3000


async def test_max_concurrency_limits_reader_threads(server: ChatServer) -> None:
    server.pace = 0.01
    most = 0

    async def one(client: AsyncClient) -> str:
        nonlocal most
        parts = []
        async for text in client.stream("Hi"):
            most = max(most, len(reader_threads()))
            parts.append(text)
        return "".join(parts)

    async with AsyncClient(server.url, max_concurrency=2) as client:
        results: list[str] = []

        async def run() -> None:
            results.append(await one(client))

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(run)
    assert results == [REPLY] * 6 and 1 <= most <= 2


async def test_reader_threads_are_not_started_in_the_event_loop_thread(
    server: ChatServer, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thread.start() waits until the new thread runs: under load, milliseconds per stream.
    starters: list[int] = []
    start = _async_client._Feed.start

    def recording_start(feed: _async_client._Feed) -> None:
        starters.append(threading.get_ident())
        start(feed)

    monkeypatch.setattr(_async_client._Feed, "start", recording_start)
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(client.chat, "Hi")
    assert len(starters) == 5 and threading.get_ident() not in starters


async def test_cancelled_before_the_first_token(server: ChatServer, client: AsyncClient) -> None:
    # Cancellation lands while the slot is taken, the thread starts, or the requests go out.
    for delay in (0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032):
        server.inject(Fault(stall=30, stall_after=0))  # silent until cancelled
        stream = client.stream("Hi")
        with anyio.move_on_after(delay):
            await stream.__anext__()
            pytest.fail("the server sends nothing")
    del stream
    for _ in range(200):
        if server.live_conversations == 0 and not reader_threads():
            break
        await anyio.sleep(0.01)
    assert server.live_conversations == 0 and not reader_threads()


def test_a_feed_shut_before_its_thread_runs_sends_nothing() -> None:
    opened: list[str] = []

    def open_exchange() -> Any:
        opened.append("request")
        raise AssertionError("nothing may be sent")

    class Loop:
        def call_soon(self, func: Any) -> None:
            pass

    feed = _async_client._Feed(h2o_sdk.Stream(open_exchange), 4, Loop())  # type: ignore[arg-type]
    feed.abort()
    feed.start()
    feed.join()
    assert feed.done and feed.error is None and opened == []


async def test_an_abandoned_stream_cleans_up_by_itself(server: ChatServer, client: AsyncClient) -> None:
    server.inject(Fault(stall=30, stall_after=1))
    stream = client.stream("Hi")
    await stream.__anext__()
    del stream
    gc.collect()
    for _ in range(200):
        if server.live_conversations == 0 and not reader_threads():
            break
        await anyio.sleep(0.01)
    assert server.live_conversations == 0 and not reader_threads()


async def test_the_seeds_provider_class(server: ChatServer) -> None:
    class Local(H2o):
        url = server.url

    tokens = [t async for t in Local.create_async_generator("", [{"role": "user", "content": "Hi"}])]
    assert "".join(tokens) == REPLY
    few = [t async for t in Local.create_async_generator("", [{"role": "user", "content": "Hi"}], max_new_tokens=3)]
    assert few == WORDS[:3]
    assert (H2o.url, H2o.model) == ("https://gpt-gm.h2o.ai", "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1")


def test_one_client_across_repeated_asyncio_runs(server: ChatServer) -> None:
    client = AsyncClient(server.url)

    async def once() -> str:
        return (await client.chat("Hi")).text

    assert [asyncio.run(once()) for _ in range(3)] == [REPLY] * 3
    asyncio.run(client.aclose())
    gc.collect()
    assert len(client._loops) == 0  # no finished event loop is kept alive


def test_the_seeds_usage_example_runs_as_documented(server: ChatServer) -> None:
    class Local(h2o_sdk.H2o):
        url = server.url

    async def main() -> str:
        out = ""
        async for token in Local.create_async_generator(
            model="", messages=[{"role": "user", "content": "Hello, who are you?"}]
        ):
            out += token
        return out

    assert asyncio.run(main()) == REPLY


def test_blocking_abort_from_another_thread(server: ChatServer) -> None:
    server.inject(Fault(stall=30, stall_after=1))
    with h2o_sdk.Client(server.url) as client:
        stream = client.stream("Hi")
        assert next(stream) == WORDS[0]
        timer = threading.Timer(0.2, stream.abort)
        timer.start()
        with pytest.raises(IncompleteStreamError, match="aborted"):
            list(stream)
        timer.join()
    assert steps(server)[-2:] == ["stop", "delete"]
