"""The Client against the local emulator over real sockets."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

import h2o_sdk
from benchmarks.baselines import seed_stream
from h2o_sdk import (
    APITimeoutError,
    Client,
    GenerationError,
    IncompleteStreamError,
    InternalServerError,
    ProtocolError,
    RateLimitError,
    Timeout,
    UnprocessableEntityError,
)
from h2o_sdk.cli import main
from h2o_sdk.testing import ChatServer, Fault, serve

REPLY = "Rivers run to the sea, and the sea is never full."
WORDS = h2o_sdk.testing.tokenize(REPLY)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve(pace=0, reply=REPLY) as s:
        yield s
        assert s.live_conversations == 0  # every leak test ends here


@pytest.fixture
def client(server: ChatServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("h2o_sdk._http._sleep", lambda seconds, abort=None: True)


PROBES = ("/api/v2/feature-flags", "/api/models", "/conversation/000000000000000000000000/summarize")


def steps(server: ChatServer) -> list[str]:
    """The flow as step names, conversation ids left out, once the background cleanup has run."""
    from h2o_sdk._lifecycle import wait_idle

    assert wait_idle()
    names = {("POST", 2): "prompt", ("DELETE", 2): "delete", ("POST", 3): "stop", ("GET", 3): "read"}
    out = []
    for method, path in server.paths():
        if method == "GET" and path in PROBES:
            continue  # the client's protocol detection, once per client
        parts = path.strip("/").split("/")
        out.append(parts[0] if len(parts) == 1 else names[(method, len(parts))])
    return out


def test_chat_and_stream(server: ChatServer, client: Client) -> None:
    reply = client.chat("Hi", details=True)
    assert reply.text == REPLY and reply.finish_reason == "eos_token" and reply.generated_tokens == len(WORDS) + 1
    assert [t.text for t in reply.tokens] == [*WORDS, "<|endoftext|>"]  # chat() keeps every token
    assert client.wait_cleanup()  # the delete runs in the background: keep the order below exact
    assert list(client.stream("Hi")) == WORDS
    assert steps(server) == ["settings", "conversation", "prompt", "delete", "conversation", "prompt", "delete"]


@pytest.mark.parametrize("fault", [None, Fault(close_delimited=True)], ids=["chunked", "close-delimited"])
def test_tokens_arrive_while_the_server_is_still_generating(fault: Fault | None) -> None:
    with serve(pace=0.05, reply=REPLY, faults=[fault] if fault else []) as server, Client(server.url) as client:
        for index, text in enumerate(client.stream("Hi")):
            assert text == WORDS[index]
            # The next token is 50 ms away on the server: what we hold is what it sent.
            assert server.events_sent <= index + 2
        assert client.wait_cleanup() and server.live_conversations == 0


def test_break_stops_generation_and_deletes(server: ChatServer, client: Client) -> None:
    server.pace = 0.05
    for _ in client.stream("Hi"):
        break
    assert steps(server)[-2:] == ["stop", "delete"]


def test_keyboard_interrupt_in_the_loop_cleans_up(server: ChatServer, client: Client) -> None:
    server.pace = 0.05
    with pytest.raises(KeyboardInterrupt), client.stream("Hi") as stream:
        for _ in stream:
            raise KeyboardInterrupt
    assert steps(server)[-2:] == ["stop", "delete"]


def test_idle_timeout_fires_on_a_stall(server: ChatServer) -> None:
    server.inject(Fault(stall=10, stall_after=2))
    with Client(server.url, timeout=Timeout(connect=2, read=0.3)) as client:
        stream = client.stream("Hi")
        with pytest.raises(APITimeoutError, match="no data"):
            list(stream)
    assert stream.text == "".join(WORDS[:2])
    assert steps(server)[-2:] == ["stop", "delete"]


def test_keepalive_comments_keep_a_slow_stream_alive() -> None:
    with serve(pace=0, reply=REPLY, keepalive=0.05, faults=[Fault(stall=0.6, stall_after=1)]) as server:
        with Client(server.url, timeout=Timeout(connect=2, read=0.3)) as client:
            assert client.chat("Hi").text == REPLY
        assert server.live_conversations == 0


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        (Fault(step="settings", status=500, times=3), InternalServerError, None),
        (Fault(step="create", status=429, times=3), RateLimitError, None),
        (Fault(status=422), UnprocessableEntityError, None),
        (Fault(status=429, times=3), RateLimitError, None),
        (Fault(status=500), InternalServerError, None),
        (Fault(status=503, times=3), InternalServerError, None),
        (Fault(error_after=3), GenerationError, "".join(WORDS[:3])),
        (Fault(error_after=0, error_type="overloaded", error_message="Model is overloaded"), GenerationError, ""),
        (Fault(drop_after=3), IncompleteStreamError, "".join(WORDS[:3])),
        (Fault(drop_after=3, close_delimited=True), IncompleteStreamError, "".join(WORDS[:3])),
        (Fault(malformed_after=2), ProtocolError, "".join(WORDS[:2])),
        (Fault(oversized_after=1), ProtocolError, WORDS[0]),
    ],
    ids=lambda value: repr(value)[:60] if isinstance(value, Fault) else None,
)
def test_each_fault_maps_to_its_error(server: ChatServer, client: Client, fault: Fault,
                                      error: type[Exception], text: str | None) -> None:
    server.inject(fault)
    with pytest.raises(error) as info:
        client.chat("Hi")
    if text is not None:
        assert info.value.text == text  # type: ignore[attr-defined]
    assert client.chat("Hi").text == REPLY  # the client is still usable


@pytest.mark.parametrize(
    "fault",
    [Fault(line_ending="\r\n", times=1), Fault(line_ending="\r"), Fault(chunk_size=1), Fault(chunk_size=7),
     Fault(close_delimited=True, line_ending="\r\n", chunk_size=3)],
    ids=["crlf", "cr", "1-byte-chunks", "7-byte-chunks", "close-delimited-crlf-3"],
)
def test_stream_shapes_all_read_the_same(server: ChatServer, client: Client, fault: Fault) -> None:
    server.reply = "Grüße 🙂 日本語 — done."
    server.inject(fault)
    assert client.chat("Hi").text == "Grüße 🙂 日本語 — done."


def test_retry_after_429_on_create_then_success(server: ChatServer, client: Client) -> None:
    server.inject(Fault(step="create", status=429))
    assert client.chat("Hi").text == REPLY
    assert steps(server)[:3] == ["settings", "conversation", "conversation"]


def test_failed_delete_is_logged_and_the_reply_kept(server: ChatServer, client: Client,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server.inject(Fault(step="delete", status=500, times=3))
    with caplog.at_level(logging.WARNING, logger="h2o_sdk"):
        assert client.chat("Hi").text == REPLY
        assert client.wait_cleanup()
        assert "could not delete conversation" in caplog.text
        assert server.live_conversations == 1
        client.close()  # tries a failed delete once more
    assert server.live_conversations == 0
    assert steps(server).count("delete") == 4  # three attempts in the background, one at close()


def test_one_connection_serves_many_chats(server: ChatServer, client: Client) -> None:
    for _ in range(5):
        assert client.chat("Hi").text == REPLY
    assert client.wait_cleanup()
    assert len(server.requests) == 3 + 1 + 5 * 3  # detection, settings, then create, prompt, delete each
    # drained, released, reused: the caller's requests and the background deletes share two connections
    assert len({record.port for record in server.requests}) <= 2


def test_a_secure_cookie_is_sent_back_to_loopback_over_http() -> None:
    # As browsers do (localhost is a secure context): a production chat-ui on loopback keeps its session.
    with serve(pace=0, reply=REPLY, secure_cookie=True) as server, Client(server.url) as client:
        assert client.chat("Hi").text == REPLY
        assert client.chat("Hi").text == REPLY
        sessions = {r.session for r in server.requests if r.method == "POST"}
    assert len(sessions) == 1 and server.live_conversations == 0


def test_welcome_modal_accepted_again_after_the_session_is_lost(server: ChatServer, client: Client) -> None:
    assert client.chat("Hi").text == REPLY
    assert client.wait_cleanup()
    client._http._session.cookies.clear()  # e.g. the server forgot us
    assert client.chat("Hi").text == REPLY
    assert steps(server)[4:] == ["conversation", "settings", "conversation", "prompt", "delete"]


def test_a_client_shared_by_threads(server: ChatServer, client: Client) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(client.chat("Hi").text)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and results == [REPLY] * 20
    assert steps(server).count("settings") == 1


def test_the_seeds_own_aiohttp_flow_runs_unchanged() -> None:
    async def run(url: str) -> str:
        return "".join([t async for t in seed_stream(url, h2o_sdk.DEFAULT_MODEL, [{"role": "user", "content": "Hi"}])])

    with serve(pace=0, reply=REPLY) as server:
        # aiohttp's cookie jar ignores cookies from IP-address hosts: use a name.
        url = server.url.replace("127.0.0.1", "localhost")
        assert asyncio.run(run(url)) == REPLY
        assert server.live_conversations == 0


def test_pytest_plugin_fixtures(h2o_server: ChatServer, h2o_client: Client) -> None:
    assert h2o_client.base_url == h2o_server.url
    assert h2o_client.chat("Hi").text
    assert h2o_client.wait_cleanup() and h2o_server.live_conversations == 0


# -- the h2o-chat command -----------------------------------------------------------------


def test_cli_local_prints_the_reply(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--local", "Write a haiku about rivers", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out == "".join(h2o_sdk.testing.tokenize(h2o_sdk.testing.default_reply(
        "<|prompt|>Write a haiku about rivers<|endoftext|><|answer|>"))[:4]) + "\n"


def test_cli_against_a_server_and_errors(server: ChatServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base-url", server.url, "Hi"]) == 0
    assert capsys.readouterr().out == REPLY + "\n"
    server.inject(Fault(status=422))
    assert main(["--base-url", server.url, "Hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("h2o-chat: error: Input validation error") and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["--no-such-option"])
    assert info.value.code == 2


def test_cli_as_a_subprocess_reads_stdin() -> None:
    done = subprocess.run([sys.executable, "-m", "h2o_sdk", "--local", "--max-new-tokens", "3"],
                          input="Write a haiku about rivers", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Here is a") and done.stderr == ""


@pytest.mark.h2o_server(reply="Marked reply.", require_welcome=False)
def test_pytest_plugin_takes_serve_options_from_a_marker(h2o_server: ChatServer, h2o_client: Client) -> None:
    assert h2o_client.chat("Hi").text == "Marked reply."
    assert h2o_server.pace == 0 and h2o_server.require_welcome is False


def test_the_pytest_plugin_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys, h2o_sdk.testing.pytest_plugin; print(sorted(m for m in ('requests', 'urllib3', 'anyio', "
            "'sseclient', 'h2o_sdk._client', 'h2o_sdk.testing._server', 'http.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
