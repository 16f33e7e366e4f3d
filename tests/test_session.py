"""One server session per client (issue 18.1), against the emulator of every family, over real sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anyio
import pytest

from h2o_sdk import AsyncClient, Client
from h2o_sdk._lifecycle import wait_idle
from h2o_sdk.testing import PROTOCOLS, ChatServer, Fault, serve

USES = 50


@pytest.fixture(params=PROTOCOLS)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(family: str) -> Iterator[ChatServer]:
    with serve(protocol=family, pace=0) as server:
        yield server


def sessions_of_writes(server: ChatServer) -> set[str | None]:
    """The server sessions of every request that acts (creates, prompts, deletes)."""
    return {r.session for r in server.requests if r.method in ("POST", "DELETE", "PATCH")}


def at_once(count: int, use: object) -> list[BaseException]:
    """Run ``use(i)`` in ``count`` threads released together; the exceptions they raised."""
    assert callable(use)
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            use(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return errors


@pytest.mark.parametrize("named", [False, True], ids=["auto", "named"])
def test_concurrent_first_uses_of_a_new_client_share_one_session(server: ChatServer, family: str,
                                                                 named: bool) -> None:
    client = Client(server.url, protocol=family if named else "auto", max_connections=USES)
    replies: list[str] = []
    errors = at_once(USES, lambda i: replies.append(client.chat(f"Hello number {i}").text))
    client.close()
    assert errors == [] and len(replies) == USES
    assert len(sessions_of_writes(server)) == 1
    assert server.live_conversations == 0


def test_concurrent_first_streams_of_a_new_async_client_share_one_session(server: ChatServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as client:
            async def use(index: int) -> None:
                async with client.stream(f"Hello number {index}") as stream:
                    async for _ in stream:
                        pass

            async with anyio.create_task_group() as group:
                for index in range(USES):
                    group.start_soon(use, index)

    anyio.run(main)
    assert wait_idle()
    assert len(sessions_of_writes(server)) == 1
    assert server.live_conversations == 0


def test_concurrent_conversations_and_prefetch_share_one_session(server: ChatServer) -> None:
    with Client(server.url, prefetch=2, max_connections=20) as client:
        def use(index: int) -> None:
            with client.conversation() as conversation:
                conversation.chat(f"Hello number {index}")
                conversation.chat("And again")

        assert at_once(20, use) == []
    assert len(sessions_of_writes(server)) == 1
    assert server.live_conversations == 0


def test_connect_establishes_the_session_in_every_family(server: ChatServer) -> None:
    with Client(server.url) as client:
        client.connect()
        assert [r.method for r in server.requests if r.method != "GET"] == ["POST"]  # one request made it
        assert len(client._http._session.cookies) == 1  # and the server's cookie is kept
        assert at_once(10, lambda i: client.chat(f"Hello number {i}")) == []
    assert len(sessions_of_writes(server)) == 1
    assert server.live_conversations == 0


def test_a_failed_first_create_lets_the_next_one_make_the_session(family: str) -> None:
    with serve(protocol=family, pace=0, faults=[]) as server:
        server.inject(Fault(step="create", status=500, times=1))
        with Client(server.url, protocol=family, max_retries=0, max_connections=20) as client:
            errors = at_once(20, lambda i: client.chat(f"Hello number {i}"))
            assert len(errors) <= 1  # only the create the server failed
        assert len(sessions_of_writes(server) - {None}) == 1
        assert server.live_conversations == 0


def test_an_abort_while_waiting_for_the_session_sends_no_create(family: str) -> None:
    with serve(protocol=family, pace=0) as server:
        # 0.10 has no gate: its first create makes the session; elsewhere the settings POST does.
        step = "create" if family == "0.10" else "settings"
        server.inject(Fault(step=step, delay=1.0))
        with Client(server.url, protocol=family) as client:
            first, waiting = client.stream("I make the session"), client.stream("I wait for it")
            outcome: dict[str, BaseException] = {}

            def read(name: str, stream: object) -> None:
                try:
                    for _ in stream:  # type: ignore[attr-defined]
                        pass
                except BaseException as exc:
                    outcome[name] = exc

            threads = [threading.Thread(target=read, args=("first", first)),
                       threading.Thread(target=read, args=("waiting", waiting))]
            threads[0].start()
            threading.Event().wait(0.2)
            threads[1].start()
            threading.Event().wait(0.2)
            waiting.abort()  # while it waits for the first's session
            for thread in threads:
                thread.join(10)
            assert "first" not in outcome
            assert type(outcome["waiting"]).__name__ == "IncompleteStreamError"
        creates = [r for r in server.requests if r.method == "POST" and r.path.endswith("/conversation")]
        assert len(creates) == 1
        assert server.live_conversations == 0


def test_a_refused_connection_names_the_address_to_check_and_no_class_of_ours() -> None:
    import socket

    from h2o_sdk import APIConnectionError

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", protocol="0.10", max_retries=0) as client, \
            pytest.raises(APIConnectionError) as caught:
        client.chat("Hi")
    message = str(caught.value)
    assert "Connection(" not in message and "_HTTP" not in message
    assert f"check that the server is running at http://127.0.0.1:{port}" in message
    assert caught.value.connect


def test_loopback_never_goes_through_the_environments_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: a request through it fails
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with serve(pace=0) as server:
        for url in (server.url, server.url.replace("127.0.0.1", "localhost")):
            with Client(url, max_retries=0) as client:
                assert client.chat("Hi").text
        with Client(server.url, proxy="http://127.0.0.1:9", max_retries=0) as client, \
                pytest.raises(Exception, match=r"(?i)proxy|refused"):
            client.chat("Hi")  # a proxy the caller names is used, loopback or not
