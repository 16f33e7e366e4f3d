"""The OpenAI-compatible gateway (issue 22): uvicorn on a loopback port in front of the emulator of
every family, driven by the official ``openai`` package and by raw HTTP for the wire details."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest
import uvicorn

from h2o_sdk.gateway import create_app
from h2o_sdk.testing import PROTOCOLS, ChatServer, Fault, serve

REPLY = "Rivers run to the sea, and the sea is never full."


class Gateway:
    def __init__(self, chat: ChatServer, **options: Any) -> None:
        self.chat = chat
        config = uvicorn.Config(create_app(chat.url, **options), host="127.0.0.1", port=0, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        end = time.monotonic() + 10
        while not self.server.started and time.monotonic() < end:
            time.sleep(0.01)
        assert self.server.started
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive()

    def client(self, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=options.pop("api_key", "unused"), max_retries=0,
                             **options)

    def raw(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        out = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        connection.close()
        return out


@pytest.fixture(params=PROTOCOLS)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def chat(family: str) -> Iterator[ChatServer]:
    with serve(protocol=family, pace=0, reply=REPLY) as server:
        yield server


@pytest.fixture
def gateway(chat: ChatServer) -> Iterator[Gateway]:
    with Gateway(chat) as gateway:
        yield gateway


def test_a_completion_with_the_official_client(gateway: Gateway, chat: ChatServer) -> None:
    client = gateway.client()
    completion = client.chat.completions.create(model=chat.models[0], messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens is None  # never invented


def test_a_stream_with_the_official_client(gateway: Gateway, chat: ChatServer, family: str) -> None:
    client = gateway.client()
    stream = client.chat.completions.create(model=chat.models[0], messages=[{"role": "user", "content": "Hi"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    *_, last = chunks
    assert last.choices == [] and last.usage is not None
    # Only 0.4 reports how many tokens it generated; nothing is counted here.
    assert (last.usage.completion_tokens is not None) == (family == "0.4")


def test_the_sse_framing_on_the_wire(gateway: Gateway) -> None:
    status, headers, body = gateway.raw("POST", "/v1/chat/completions",
                                        {"messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = body.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    objects = [json.loads(e[6:]) for e in events[:-2]]
    assert objects[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert objects[-1]["choices"][0]["delta"] == {} and objects[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(o["object"] == "chat.completion.chunk" for o in objects)


def test_models(gateway: Gateway, chat: ChatServer, family: str) -> None:
    client = gateway.client()
    ids = [m.id for m in client.models.list()]
    if family in ("0.4", "0.7"):
        assert len(ids) == 1 and ids[0] in chat.models  # no list there: the configured model
    else:
        assert ids == list(chat.models)
    assert client.models.retrieve(ids[0]).id == ids[0]  # ids hold slashes
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no/such-model")


def test_an_unknown_model_is_a_404_in_openais_shape(gateway: Gateway) -> None:
    status, _, body = gateway.raw("POST", "/v1/chat/completions",
                                  {"model": "no/such-model", "messages": [{"role": "user", "content": "Hi"}]})
    error = json.loads(body)["error"]
    assert status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"), ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"logprobs": True}, "logprobs"),
    ({"messages": []}, "messages"), ({"stop": 5}, "stop"), ({"max_tokens": 0}, "max_tokens"),
])
def test_what_no_chat_ui_can_do_is_a_400_naming_the_parameter(gateway: Gateway, body: dict[str, Any],
                                                               param: str) -> None:
    request = {"messages": [{"role": "user", "content": "Hi"}], **body}
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="x", **{k: v for k, v in request.items() if k != "model"})
    assert info.value.status_code == 400 and info.value.param == param  # type: ignore[attr-defined]
    assert gateway.chat.live_conversations == 0


def test_sampling_parameters_go_to_0_4_and_are_refused_elsewhere(gateway: Gateway, family: str) -> None:
    client = gateway.client()
    messages: Any = [{"role": "user", "content": "Hi"}]
    if family == "0.4":
        assert client.chat.completions.create(model="", messages=messages, temperature=0.5, seed=3).choices
        return
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=gateway.chat.models[0], messages=messages, temperature=0.5)
    assert gateway.chat.live_conversations == 0


def test_lenient_ignores_sampling_parameters_and_says_so() -> None:
    with serve(protocol="0.9", pace=0, reply=REPLY) as chat, Gateway(chat, lenient=True) as gateway:
        status, headers, body = gateway.raw("POST", "/v1/chat/completions",
                                            {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2})
        assert status == 200 and headers["x-h2o-ignored-parameters"] == "temperature"
        assert json.loads(body)["choices"][0]["message"]["content"] == REPLY


@pytest.mark.parametrize("family", ["0.4", "0.8", "0.10"])
def test_stop_and_max_tokens_in_every_family(gateway: Gateway) -> None:
    client = gateway.client()
    messages: Any = [{"role": "user", "content": "Hi"}]
    stopped = client.chat.completions.create(model="", messages=messages, stop=["sea"])
    assert stopped.choices[0].message.content == "Rivers run to the " and stopped.choices[0].finish_reason == "stop"
    pieces = list(client.chat.completions.create(model="", messages=messages, stop="sea", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == "Rivers run to the "
    short = client.chat.completions.create(model="", messages=messages, max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content and REPLY.startswith(short.choices[0].message.content)
    assert len(short.choices[0].message.content) < len(REPLY)
    end = time.monotonic() + 10
    while gateway.chat.live_conversations and time.monotonic() < end:
        time.sleep(0.02)
    assert gateway.chat.live_conversations == 0  # cut replies are not continued: deleted


@pytest.mark.parametrize("family", ["0.8", "0.10"])
def test_a_follow_up_continues_the_servers_conversation(gateway: Gateway, chat: ChatServer) -> None:
    client = gateway.client()
    messages: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}]
    first = client.chat.completions.create(model="", messages=messages)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And a sea?"}]
    client.chat.completions.create(model="", messages=messages)
    assert chat.live_conversations == 1  # the same conversation, continued
    (conversation_id,) = chat._conversations
    stored = chat.conversation(conversation_id)
    assert stored is not None
    assert [m["content"] for m in stored["messages"]] == ["Name a river.", REPLY, "And a sea?", REPLY]
    # Another history starts a conversation of its own, the earlier turns flattened into it.
    client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello"},
                                                       {"role": "user", "content": "Bye"}])
    assert chat.live_conversations == 2


def test_conversations_are_deleted_at_shutdown_unless_kept() -> None:
    with serve(protocol="0.10", pace=0, reply=REPLY) as chat:
        with Gateway(chat) as gateway:
            gateway.client().chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
            assert chat.live_conversations == 1
        assert chat.live_conversations == 0
        with Gateway(chat, keep_conversations=True) as gateway:
            gateway.client().chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
        assert chat.live_conversations == 1


def test_an_api_key_is_required_when_set() -> None:
    with serve(protocol="0.10", pace=0, reply=REPLY) as chat, Gateway(chat, api_key="s3cret") as gateway:
        with pytest.raises(openai.AuthenticationError):
            gateway.client(api_key="wrong").models.list()
        status, _, body = gateway.raw("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        assert gateway.client(api_key="s3cret").models.list().data


def test_a_refusal_before_the_first_token_is_a_real_status() -> None:
    with serve(protocol="0.10", pace=0, reply=REPLY, rate_limit=1) as chat, Gateway(chat) as gateway:
        client = gateway.client()
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}], stream=True)
        assert info.value.response.headers["retry-after"] == "60"


def test_an_error_after_the_first_token_is_an_error_event() -> None:
    with serve(protocol="0.9", pace=0, reply=REPLY, faults=[Fault(error_after=2)]) as chat, \
            Gateway(chat) as gateway:
        stream = gateway.client().chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}],
                                                          stream=True)
        got = []
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            for chunk in stream:
                got.append(chunk)
        assert got  # the first tokens arrived, then the error: never a bare cut
        end = time.monotonic() + 10
        while chat.live_conversations and time.monotonic() < end:
            time.sleep(0.02)
        assert chat.live_conversations == 0


def test_a_client_that_goes_away_stops_the_generation() -> None:
    with serve(protocol="0.10", pace=0.05, reply=REPLY * 4) as chat, Gateway(chat) as gateway:
        stream = gateway.client().chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}],
                                                          stream=True)
        for index, _ in enumerate(stream):
            if index == 3:
                break
        stream.close()
        end = time.monotonic() + 10
        while chat.live_conversations and time.monotonic() < end:
            time.sleep(0.02)
        assert chat.live_conversations == 0
        assert ("POST", f"/conversation/{next(iter([p for m, p in chat.paths() if m == 'DELETE']))[14:]}"
                "/stop-generating") in chat.paths()
        while any(t.name == "h2o-sdk-stream" for t in threading.enumerate()) and time.monotonic() < end:
            time.sleep(0.02)
        assert not [t for t in threading.enumerate() if t.name == "h2o-sdk-stream"]  # no reader thread leaked


def test_the_async_official_client_and_many_streams_at_once() -> None:
    async def main(url: str) -> None:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        async def one(results: list[str]) -> None:
            stream = await client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}],
                                                          stream=True)
            results.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))

        results: list[str] = []
        async with anyio.create_task_group() as group:
            for _ in range(200):  # more than the client's 64 stream slots: the rest wait their turn
                group.start_soon(one, results)
        assert results == [REPLY] * 200
        await client.close()

    with serve(protocol="0.10", pace=0, reply=REPLY) as chat, Gateway(chat) as gateway:
        anyio.run(main, gateway.url)
        end = time.monotonic() + 10
        while chat.live_conversations != 200 and time.monotonic() < end:
            time.sleep(0.02)
    assert chat.live_conversations == 0  # deleted at shutdown


def test_the_command_serves_the_gateway_in_front_of_the_local_server() -> None:
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "h2o_sdk", "serve", "--openai", "--local", "--protocol", "0.10",
                                "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "serving OpenAI's API" in process.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=3)
        completion = client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
        assert completion.choices[0].message.content
        client.close()
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(20)
        assert process.stdout is not None
        process.stdout.close()
    assert status == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--openai", "--base-url", "http://127.0.0.1:1", "--host", "0.0.0.0"], "loopback only"),
    (["--openai"], "--base-url URL or --local"),
    (["--base-url", "http://127.0.0.1:1"], "go with --openai"),
])
def test_the_command_refuses_what_cannot_work(args: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from h2o_sdk.cli import main

    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().err


def test_langchains_chat_openai_through_the_gateway() -> None:
    """LangChain's ChatOpenAI, where it is installed (CI installs it for this test: .ci/run)."""
    langchain_openai = pytest.importorskip("langchain_openai")
    with serve(protocol="0.10", pace=0, reply=REPLY) as chat, Gateway(chat) as gateway:
        model = langchain_openai.ChatOpenAI(base_url=gateway.url + "/v1", api_key="unused", model=chat.models[0],
                                            max_retries=0)
        assert model.invoke("Hi").content == REPLY
        assert "".join(str(piece.content) for piece in model.stream("Hi")) == REPLY
        assert model.invoke("Hi", stop=["sea"]).content == "Rivers run to the "


def test_beyond_the_queue_the_answer_is_503() -> None:
    async def main(url: str) -> list[int]:
        statuses: list[int] = []
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        async def one() -> None:
            try:
                await client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(one)
        await client.close()
        return statuses

    with serve(protocol="0.10", pace=0.05, reply=REPLY) as chat, \
            Gateway(chat, max_queue=1, max_concurrency=2) as gateway:
        statuses = anyio.run(main, gateway.url)
        assert sorted(statuses) == [200, 200, 200, 503, 503, 503]


def test_every_way_a_request_ends_frees_its_place() -> None:
    with serve(protocol="0.10", pace=0, reply=REPLY, rate_limit=2) as chat, Gateway(chat) as gateway:
        client = gateway.client()
        messages: Any = [{"role": "user", "content": "Hi"}]
        client.chat.completions.create(model="", messages=messages)
        list(client.chat.completions.create(model="", messages=messages, stream=True))
        with pytest.raises(openai.RateLimitError):  # refused at the first event: the turn existed
            client.chat.completions.create(model="", messages=messages)
        with pytest.raises(openai.BadRequestError):  # refused before any turn
            client.chat.completions.create(model="", messages=messages, n=2)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no/such", messages=messages)
        app_gateway = gateway.server.config.app.state.gateway
        end = time.monotonic() + 5
        while (app_gateway.inflight or app_gateway.turns) and time.monotonic() < end:
            time.sleep(0.01)
        assert app_gateway.inflight == 0 and not app_gateway.turns
