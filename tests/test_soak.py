"""A bounded soak: hundreds of randomized chats with random faults and random exits.

Blocking and async (asyncio and trio), one-shot streams and conversations;
exits by finishing, ``break``, ``close()``, an exception in the loop body, an
abandoned stream, ``abort()`` from another thread, and cancellation at random
points. At the end no conversation is alive on the server, and no thread or
file descriptor is left over. The seed is fixed (and printed on failure), so
a failure can be replayed; the whole test takes a few seconds.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from h2o_sdk import AsyncClient, Client, H2oError, Timeout
from h2o_sdk.testing import ChatServer, Fault, serve

SEED = 20261202
CHATS = 300
ASYNC_CHATS = 60
REPLY = "one two three four five six seven eight nine ten"
TIME_LIMIT = 45.0  # seconds; the loops stop by themselves past it


class CallerBug(Exception):
    """An exception raised in the caller's loop body."""


def random_fault(rng: random.Random) -> Fault | None:
    kind = rng.choice(["none", "none", "none", "error", "drop", "status", "stall", "malformed", "create", "stop",
                       "chunks", "delay"])
    if kind == "error":
        return Fault(error_after=rng.randint(0, 9))
    if kind == "drop":
        return Fault(drop_after=rng.randint(0, 9), close_delimited=rng.random() < 0.3)
    if kind == "status":
        return Fault(status=rng.choice([422, 429, 500, 503]))
    if kind == "stall":
        return Fault(stall=0.05, stall_after=rng.randint(0, 9))
    if kind == "malformed":
        return Fault(malformed_after=rng.randint(0, 9))
    if kind == "create":
        return Fault(step="create", status=rng.choice([429, 500, 503]))
    if kind == "stop":
        return Fault(step="stop", status=500)
    if kind == "chunks":
        return Fault(chunk_size=rng.randint(1, 9), line_ending=rng.choice(["\n", "\r\n", "\r"]))
    if kind == "delay":
        return Fault(step=rng.choice(["settings", "create", "prompt"]), delay=0.05)
    return None


def inject_random_fault(server: ChatServer, rng: random.Random) -> None:
    fault = random_fault(rng)
    if fault is not None:
        server.inject(fault)


def forget_faults(server: ChatServer) -> None:
    """A fault not met (e.g. no stop was sent) must not leak into the next chat."""
    with server._lock:
        server._injected.clear()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def our_threads() -> list[str]:
    """Live threads, less the event loops' pooled workers (they idle on for a while, by design)."""
    pooled = ("Trio thread", "AnyIO worker thread", "asyncio_")
    return [t.name for t in threading.enumerate() if not t.name.startswith(pooled)]


@pytest.fixture
def baseline() -> Iterator[tuple[int, int]]:
    gc.collect()
    yield len(our_threads()), open_fds()


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve(pace=0.001, reply=REPLY) as s:
        yield s


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("h2o_sdk._http._sleep", lambda seconds, abort=None: not (abort and abort.aborted))


def blocking_chat(client: Client, rng: random.Random) -> None:
    exit_after = rng.randint(0, 12)
    how = rng.choice(["finish", "break", "close", "raise", "abandon", "abort", "conversation"])
    try:
        if how == "conversation":
            with client.conversation() as conversation:
                for _ in range(rng.randint(1, 3)):
                    stream = conversation.stream("Hi")
                    for index, _ in enumerate(stream):
                        if index == exit_after:
                            break
                    stream.close()
            return
        stream = client.stream("Hi")
        if how == "abort":
            timer = threading.Timer(rng.random() * 0.02, stream.abort)
            timer.start()
            try:
                list(stream)
            finally:
                timer.join()
            return
        for index, _ in enumerate(stream):
            if index == exit_after:
                if how == "break":
                    break
                if how == "close":
                    stream.close()
                    break
                if how == "raise":
                    raise CallerBug()
                if how == "abandon":
                    del stream  # no close(): the generator is finished when it is collected
                    break
    except (H2oError, CallerBug):
        pass


def test_soak_blocking(server: ChatServer, baseline: tuple[int, int]) -> None:
    rng = random.Random(SEED)
    deadline = time.monotonic() + TIME_LIMIT
    client = Client(server.url, timeout=Timeout(connect=2, read=2, cleanup=2), max_retries=1)
    runs = 0
    try:
        for _ in range(CHATS):
            if time.monotonic() > deadline:
                break
            inject_random_fault(server, rng)
            blocking_chat(client, rng)
            runs += 1
            forget_faults(server)
    finally:
        client.close()
    assert runs >= CHATS // 2, f"seed {SEED}: only {runs} chats in {TIME_LIMIT} s"
    assert_clean(server, baseline)


async def async_chats(url: str, rng: random.Random, server: ChatServer, deadline: float) -> int:
    runs = 0
    async with AsyncClient(url, timeout=Timeout(connect=2, read=2, cleanup=2), max_retries=1) as client:
        for _ in range(ASYNC_CHATS):
            if time.monotonic() > deadline:
                break
            inject_random_fault(server, rng)
            how = rng.choice(["finish", "cancel", "break", "conversation", "raise"])
            exit_after = rng.randint(0, 12)
            try:
                if how == "cancel":
                    with anyio.move_on_after(rng.random() * 0.03):
                        async for _ in client.stream("Hi"):
                            pass
                elif how == "conversation":
                    with anyio.move_on_after(rng.random() * 0.2):
                        async with client.conversation() as conversation:
                            await conversation.chat("Hi")
                            await conversation.chat("Again")
                else:
                    async with client.stream("Hi") as stream:
                        index = 0
                        async for _ in stream:
                            if index == exit_after and how == "break":
                                break
                            if index == exit_after and how == "raise":
                                raise CallerBug()
                            index += 1
            except (H2oError, CallerBug):
                pass
            runs += 1
            forget_faults(server)
    return runs


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_soak_async(server: ChatServer, baseline: tuple[int, int], backend: str) -> None:
    rng = random.Random(SEED + (backend == "trio"))
    deadline = time.monotonic() + TIME_LIMIT
    runs = anyio.run(async_chats, server.url, rng, server, deadline, backend=backend)
    assert runs >= ASYNC_CHATS // 2, f"seed {SEED}: only {runs} chats"
    assert_clean(server, baseline)


def assert_clean(server: ChatServer, baseline: tuple[int, int]) -> None:
    threads, fds = baseline
    assert server.live_conversations == 0, f"seed {SEED}: {server.live_conversations} conversations left alive"
    settle(lambda: len(our_threads()) <= threads)
    assert len(our_threads()) <= threads, f"seed {SEED}: {our_threads()}"
    gc.collect()
    # The server's own sockets stay until it closes; the client's are gone.
    settle(lambda: open_fds() <= fds + 2)
    assert open_fds() <= fds + 2, f"seed {SEED}: {open_fds() - fds} file descriptors left open"


def settle(done: Callable[[], Any], seconds: float = 5.0) -> None:
    """Wait a little for threads that are finishing (anyio's idle workers, the server's handlers)."""
    end = time.monotonic() + seconds
    while not done() and time.monotonic() < end:
        time.sleep(0.02)
