"""The local server in front of a real model server, in every family (issue 20), over real sockets.

The model servers are the peer fakes the real chat-ui releases were run with (``tests/fakes``, copies of
``shared/peer``), started as processes; what the real releases sent them is in ``tests/data/upstream``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from h2o_sdk import Client, GenerationError
from h2o_sdk.testing import PROTOCOLS, ChatServer, serve

from .helpers import silent_server

FAKES = Path(__file__).parent / "fakes"
RECORDED = Path(__file__).parent / "data" / "upstream"
REPLY = "Hello! I am a fake h2oGPT. How can I help you today?"
RELEASES = {"0.4": "v0.4", "0.7": "v0.7", "0.8": "v0.8.4", "0.9": "v0.9.4", "0.10": "v0.10.0"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def model_server(kind: str, tmp_path: Path, delay: str = "0") -> Iterator[tuple[str, Path]]:
    """A fake model server on a free loopback port: its URL, and the log of what it was sent."""
    log = tmp_path / f"{kind}.jsonl"
    script = "fake_tgi.py" if kind == "tgi" else "fake_openai.py"
    prefix = "FAKE_TGI" if kind == "tgi" else "FAKE_OAI"
    env = {**os.environ, f"{prefix}_LOG": str(log), f"{prefix}_TOKEN_DELAY": delay}
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(FAKES / script), str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def upstream_of(family: str, base: str) -> str:
    """The URL each release is configured with: 0.4 TGI's /generate_stream, 0.7-0.9 the endpoint, 0.10 /v1."""
    return {"0.4": base + "/generate_stream", "0.10": base + "/v1"}.get(family, base)


def kind_of(family: str) -> str:
    return "openai" if family == "0.10" else "tgi"


def posts(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [entry for entry in lines if entry["method"] == "POST"]


@pytest.fixture(params=PROTOCOLS)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_conversation_in_front_of_the_model_server_sends_what_the_release_sent(family: str,
                                                                                 tmp_path: Path) -> None:
    kind = kind_of(family)
    with model_server(kind, tmp_path) as (base, log), \
            serve(protocol=family, pace=0, upstream=upstream_of(family, base)) as server, \
            Client(server.url) as client, client.conversation() as conversation:
        assert conversation.chat("Hello").text == REPLY
        assert conversation.chat("And again").text == REPLY
        assert [m["content"] for m in conversation.history] == ["Hello", REPLY, "And again", REPLY]
    sent = posts(log)
    recorded = [entry for entry in (json.loads(line) for line in
                (RECORDED / f"chat-ui-{RELEASES[family]}.jsonl").read_text().splitlines())
                if entry["method"] == "POST"]
    assert [e["path"] for e in sent] == [e["path"] for e in recorded]  # same route, same number of calls
    for ours, theirs in zip(sent, recorded, strict=True):
        mine, real = json.loads(ours["body"]), json.loads(theirs["body"])
        if family == "0.4":  # the client's own body, inputs replaced, as 0.4 forwards it
            assert mine["inputs"] == real["inputs"]
            continue
        assert set(mine) == set(real)  # 0.9 drops "options"
        if kind == "tgi":
            assert mine["inputs"] == real["inputs"]  # the release's prompt template, byte for byte
            assert mine["stream"] is True and mine["parameters"]["return_full_text"] is False
            assert "stop_sequences" in mine["parameters"]
        else:
            assert mine["messages"] == real["messages"] and mine["stream"] is True
            headers = {k.lower(): v for k, v in ours["headers"].items()}
            assert headers["authorization"].startswith("Bearer ")
            assert headers["chatui-conversation-id"] == conversation.id


FAILURES = {  # the fakes' marker -> what the client raises (0.7 on: in band)
    "http500": "Request failed during generation: Server error: CUDA out of memory",
    "stream-error": "Request failed during generation: Server error: CUDA out of memory",
    "die": "terminated",
}


@pytest.mark.parametrize("marker", FAILURES)
def test_a_model_server_failure_is_relayed_in_band(family: str, marker: str, tmp_path: Path) -> None:
    if family == "0.4":
        pytest.skip("0.4 passes the model server's status and body through (tests/test_upstream.py)")
    kind = kind_of(family)
    with model_server(kind, tmp_path) as (base, log), \
            serve(protocol=family, pace=0, upstream=upstream_of(family, base)) as server, Client(server.url) as client:
        with pytest.raises(GenerationError) as caught:
            client.chat(f"Hello [[tgi:{marker}]]")
        assert FAILURES[marker] in str(caught.value)
        if family == "0.10" and marker == "http500":
            assert caught.value.status_code == 500 and str(caught.value).startswith("500 ")
            assert len(posts(log)) == 6  # two generation attempts of three tries each, as the real 0.10
        if family == "0.10" and marker == "die":
            assert len(posts(log)) == 2  # the second attempt streams again from the start
        assert client.wait_cleanup()
        assert server.live_conversations == 0


def test_a_model_server_that_is_down_is_an_in_band_error(family: str, tmp_path: Path) -> None:
    if family == "0.4":
        pytest.skip("0.4 answers 500 Internal Error (tests/test_upstream.py)")
    url = upstream_of(family, f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    with serve(protocol=family, pace=0, upstream=url) as server, Client(server.url) as client:
        with pytest.raises(GenerationError, match="Connection error." if family == "0.10" else "fetch failed"):
            client.chat("Hello")
        assert client.wait_cleanup()
        assert server.live_conversations == 0


@pytest.mark.parametrize("family_", ["0.7", "0.10"])
def test_stop_generating_cuts_the_model_servers_request(family_: str, tmp_path: Path) -> None:
    kind = kind_of(family_)
    with model_server(kind, tmp_path, delay="0.3") as (base, _), \
            serve(protocol=family_, pace=0, upstream=upstream_of(family_, base)) as server, \
            Client(server.url) as client, client.conversation() as conversation:
        stream = conversation.stream("Tell me [[tgi:slow]]")
        pieces = []
        for text in stream:
            pieces.append(text)
            if len(pieces) == 2:
                break
        stream.close()
        reply = conversation.history[-1]["content"]
        assert reply and reply != REPLY and REPLY.startswith(reply.strip())  # what it had when it stopped


def test_the_model_list_of_an_openai_compatible_server(tmp_path: Path) -> None:
    with model_server("openai", tmp_path) as (base, _), \
            serve(protocol="0.10", pace=0, upstream=base + "/v1", models=["some/other-model"]) as server, \
            Client(server.url) as client:
        assert client.models() == ["h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"]  # GET /v1/models, as 0.10


@pytest.mark.parametrize(("family_", "api"), [("0.8", "openai"), ("0.10", "tgi")])
def test_either_kind_of_model_server_for_any_family_from_0_7(family_: str, api: str, tmp_path: Path) -> None:
    with model_server(api, tmp_path) as (base, log), \
            serve(protocol=family_, pace=0, upstream=base + "/v1" if api == "openai" else base,
                  upstream_api=api) as server, Client(server.url) as client:
        assert client.chat("Hello").text == REPLY
    assert posts(log)[0]["path"] == ("/v1/chat/completions" if api == "openai" else "/")


def test_an_upstream_kind_or_url_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="upstream_api"):
        ChatServer(upstream="http://127.0.0.1:9", upstream_api="grpc", protocol="0.8")
    with pytest.raises(ValueError, match="http"):
        ChatServer(upstream="ftp://127.0.0.1:9", protocol="0.10")


def test_a_silent_model_server_never_hangs_the_local_server() -> None:
    with silent_server() as (url, _), serve(protocol="0.9", pace=0, upstream=url, upstream_timeout=0.5) as server, \
            Client(server.url) as client, pytest.raises(GenerationError, match="terminated"):
        client.chat("Hello")


def test_0_4_in_front_of_an_openai_compatible_server_speaks_tgi_to_the_client(tmp_path: Path) -> None:
    from h2o_sdk import InternalServerError

    with model_server("openai", tmp_path) as (base, log), \
            serve(protocol="0.4", pace=0, upstream=base + "/v1", upstream_api="openai") as server, \
            Client(server.url) as client:
        reply = client.chat("Hello")
        assert reply.text == REPLY and reply.tokens[-1].special  # TGI events, as 0.4 passes them on
        with pytest.raises(InternalServerError, match="CUDA out of memory"):  # the status, passed through
            client.chat("Hello [[oai:http500]]")
        assert client.wait_cleanup()
        assert server.live_conversations == 0
    assert posts(log)[0]["path"] == "/v1/chat/completions"


def test_the_models_parameters_and_a_chat_template_of_ones_own(tmp_path: Path) -> None:
    def template(messages: list[dict[str, str]]) -> str:
        return "".join(f"[{m['role']}] {m['content']}\n" for m in messages) + "[assistant] "

    with model_server("tgi", tmp_path) as (base, log), \
            serve(protocol="0.8", pace=0, upstream=base, chat_template=template,
                  model_parameters={"temperature": 0.3, "stop": ["</s>"]}) as server, \
            Client(server.url) as client:
        assert client.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]).text
    body = json.loads(posts(log)[0]["body"])
    assert body["inputs"] == "[system] Be brief.\n[user] Hi\n[assistant] "
    assert body["parameters"] == {"temperature": 0.3, "stop": ["</s>"], "stop_sequences": ["</s>"],
                                  "return_full_text": False}


@pytest.mark.parametrize("family_", ["0.8", "0.9"])
def test_0_8_and_0_9_ignore_a_stop_and_store_the_whole_reply(family_: str, tmp_path: Path) -> None:
    import time

    with model_server("tgi", tmp_path, delay="0.05") as (base, _), \
            serve(protocol=family_, pace=0, upstream=base) as server, Client(server.url) as client, \
            client.conversation(keep=True) as conversation:
        for _ in conversation.stream("Tell me"):
            break  # a stop the release ignores: it goes on and stores the whole reply
        assert conversation.id is not None
        end = time.monotonic() + 10
        stored = None
        while time.monotonic() < end:
            found = server.conversation(conversation.id)
            stored = found["messages"][-1]["content"] if found else None
            if stored == REPLY:
                break
            time.sleep(0.05)
        assert stored == REPLY
        client._operations.delete(conversation.id)  # kept: tidy up
        assert client.wait_cleanup()


@pytest.mark.parametrize("family_", ["0.9"])  # 0.10 shares the writer; its relay is tested above
def test_keepalive_lines_go_on_while_the_model_server_is_slow(family_: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import h2o_sdk._stream as stream_module

    seen: list[str] = []
    reader = stream_module.json_lines

    def tap(chunks: Any, max_line_size: int = stream_module.DEFAULT_MAX_EVENT_SIZE) -> Iterator[str]:
        for line in reader(chunks, max_line_size):
            seen.append(json.loads(line).get("status") or json.loads(line)["type"])
            yield line

    monkeypatch.setattr(stream_module, "json_lines", tap)
    kind = kind_of(family_)
    with model_server(kind, tmp_path, delay="0.25") as (base, _), \
            serve(protocol=family_, pace=0, upstream=upstream_of(family_, base)) as server, \
            Client(server.url) as client:
        assert client.chat("Hello").text == REPLY
    first = seen.index("stream")
    assert "keepAlive" in seen[first:]  # between the tokens, on the release's timer
