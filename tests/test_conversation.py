"""Multi-turn conversations against the local server: history follows what the server stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from h2o_sdk import AsyncClient, Client, Conversation, GenerationError, IncompleteStreamError, UnprocessableEntityError
from h2o_sdk.testing import ChatServer, Fault

from .helpers import numbered_server
from .test_live import steps


@pytest.fixture
def server() -> Iterator[ChatServer]:
    yield from numbered_server()


@pytest.fixture
def client(server: ChatServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def stored(server: ChatServer, conversation: Conversation) -> list[dict[str, str]]:
    assert conversation.id is not None
    found = server.conversation(conversation.id)
    assert found is not None
    return [{"role": m["from"], "content": m["content"]} for m in found["messages"]]


def test_turns_send_only_the_new_text_and_build_on_stored_history(server: ChatServer, client: Client) -> None:
    with client.conversation() as conversation:
        assert conversation.id is None  # nothing sent yet
        assert conversation.chat("First?").text == "Answer number 1 is here."
        assert "".join(conversation.stream("Second?")) == "Answer number 2 is here."
        assert conversation.history == [
            {"role": "user", "content": "First?"}, {"role": "assistant", "content": "Answer number 1 is here."},
            {"role": "user", "content": "Second?"}, {"role": "assistant", "content": "Answer number 2 is here."},
        ]
        assert stored(server, conversation) == conversation.history
        prompts = server.prompts  # type: ignore[attr-defined]
        assert prompts[1] == ("<|prompt|>First?<|endoftext|><|answer|>Answer number 1 is here.<|endoftext|>"
                              "<|prompt|>Second?<|endoftext|><|answer|>")
    assert steps(server).count("conversation") == 1 and steps(server)[-1] == "delete"


def test_retry_regenerates_the_last_reply(server: ChatServer, client: Client) -> None:
    with client.conversation() as conversation:
        conversation.chat("First?")
        conversation.chat("Second?")
        assert conversation.retry().text == "Answer number 3 is here."
        assert [m["content"] for m in conversation.history] == [
            "First?", "Answer number 1 is here.", "Second?", "Answer number 3 is here."]
        assert stored(server, conversation) == conversation.history
        assert server.prompts[2].endswith("<|prompt|>Second?<|endoftext|><|answer|>")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault(error_after=2), GenerationError), (Fault(drop_after=2), IncompleteStreamError),
     (Fault(status=422), UnprocessableEntityError)],
    ids=["error-event", "dropped", "http-422"],
)
def test_a_failed_turn_adds_nothing(server: ChatServer, client: Client, fault: Fault,
                                    error: type[Exception]) -> None:
    with client.conversation() as conversation:
        conversation.chat("First?")
        server.inject(fault)
        with pytest.raises(error):
            conversation.chat("Second?")
        assert len(conversation.history) == 2
        assert stored(server, conversation) == conversation.history
        conversation.chat("Third?")  # the conversation goes on
        assert stored(server, conversation) == conversation.history


def test_a_turn_cut_short_keeps_exactly_what_the_server_stored(server: ChatServer, client: Client) -> None:
    server.pace = 0.03
    with client.conversation() as conversation:
        for index, _ in enumerate(conversation.stream("Tell me")):
            if index == 1:
                break
        history = conversation.history
        assert history[0] == {"role": "user", "content": "Tell me"}
        assert "Answer number 1 is here.".startswith(history[1]["content"]) and history[1]["content"]
        assert stored(server, conversation) == history
        assert "stop" in steps(server) and "delete" not in steps(server)


def test_keep_leaves_the_server_conversation(server: ChatServer, client: Client) -> None:
    with client.conversation(keep=True) as conversation:
        conversation.chat("Hi")
    assert conversation.id is not None and server.conversation(conversation.id) is not None
    client._operations.delete(conversation.id)  # tidy up for the leak check


def test_misuse(client: Client) -> None:
    conversation = client.conversation()
    with pytest.raises(ValueError, match="blank"):
        conversation.stream("  ")
    with pytest.raises(TypeError):
        conversation.stream(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no turn"):
        conversation.retry()
    conversation.close()
    with pytest.raises(ValueError, match="closed"):
        conversation.stream("Hi")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_async_twin(server: ChatServer, anyio_backend: str) -> None:
    async with AsyncClient(server.url) as client, client.conversation() as conversation:
        assert (await conversation.chat("First?")).text == "Answer number 1 is here."
        assert "".join([t async for t in conversation.stream("Second?")]) == "Answer number 2 is here."
        assert (await conversation.retry()).text == "Answer number 3 is here."
        assert len(conversation.history) == 4
