"""What a chat-ui account holds (issue 21, first part): listing, opening, renaming and deleting
conversations, and system prompts, against the emulator of every family over real sockets."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from h2o_sdk import AsyncClient, Client, ConversationInfo, H2oError
from h2o_sdk.testing import PROTOCOLS, ChatServer, serve


@pytest.fixture(params=PROTOCOLS)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(family: str) -> Iterator[ChatServer]:
    with serve(protocol=family, pace=0) as server:
        yield server


def writes(server: ChatServer) -> list[tuple[str, str]]:
    return [(m, p) for m, p in server.paths() if m in ("POST", "PATCH", "DELETE")]


def kept(client: Client, *texts: str) -> list[str]:
    """Conversations of one turn each, kept on the server; their ids, oldest first."""
    ids = []
    for text in texts:
        with client.conversation(keep=True) as conversation:
            conversation.chat(text)
            assert conversation.id is not None
            ids.append(conversation.id)
    return ids


def test_the_sessions_conversations_newest_first(server: ChatServer, family: str) -> None:
    with Client(server.url) as client, Client(server.url) as stranger:
        ids = kept(client, "First", "Second", "Third")
        kept(stranger, "Not yours")
        listed = client.conversations()
        assert [c.id for c in listed] == ids[::-1]
        assert all(isinstance(c, ConversationInfo) and c.title for c in listed)
        assert all(c.model == client.model for c in listed)
        assert all((c.updated_at is None) is (family == "0.4") for c in listed)  # 0.4 lists no date
        assert [c.id for c in client.conversations(limit=2)] == ids[:0:-1]
        for conversation_id in ids:
            client.conversation(id=conversation_id).delete()
        assert client.conversations() == []
        assert stranger.conversations() != []
        for info in stranger.conversations():
            stranger.conversation(id=info.id).delete()
    assert server.live_conversations == 0


def test_an_opened_conversation_goes_on_and_is_never_deleted_by_closing_it(server: ChatServer) -> None:
    with Client(server.url) as client:
        (conversation_id,) = kept(client, "Name a river.")
        before = len(writes(server))
        opened = client.conversation(id=conversation_id)
        assert len(writes(server)) == before  # opening and listing change nothing on the server
        assert opened.history[0]["content"] == "Name a river."
        assert len(opened.history) == 2 and opened.title
        opened.chat("And a longer one?")
        assert [m["content"] for m in opened.history][2] == "And a longer one?" and len(opened.history) == 4
        opened.close()
        assert client.wait_cleanup()
        assert server.conversation(conversation_id) is not None  # closing an opened conversation keeps it
        again = client.conversation(id=conversation_id)
        assert again.history == opened.history
        again.rename("Rivers")
        assert again.title == "Rivers"
        assert [c.title for c in client.conversations()] == ["Rivers"]
        again.delete()
        assert server.conversation(conversation_id) is None
        with pytest.raises(ValueError, match="closed"):
            again.chat("Hi")


def test_opening_a_conversation_that_is_not_there_is_an_error(server: ChatServer) -> None:
    with Client(server.url) as client, pytest.raises(H2oError):
        client.conversation(id="0123456789abcdef01234567")


def test_a_system_prompt(server: ChatServer, family: str) -> None:
    with Client(server.url) as client:
        with client.conversation(system_prompt="Answer in French.", keep=True) as conversation:
            assert conversation.system_prompt == "Answer in French."
            conversation.chat("Name a river.")
            assert conversation.id is not None
            conversation_id = conversation.id
        stored = server.conversation(conversation_id)
        assert stored is not None
        if family == "0.4":
            # 0.4 keeps no preprompt: the first message carries it, in the seed's prompt format.
            assert "Answer in French." in stored["messages"][0]["content"]
        else:
            assert client.conversation(id=conversation_id).system_prompt == "Answer in French."
        client.conversation(id=conversation_id).delete()
    assert server.live_conversations == 0


@pytest.mark.parametrize(("family_", "count", "page"), [("0.8", 301, 300), ("0.10", 31, 30)])
def test_every_page_is_read(family_: str, count: int, page: int) -> None:
    with serve(protocol=family_, pace=0) as server, Client(server.url) as client:
        for _ in range(count):
            with client.conversation(keep=True) as conversation:
                conversation.chat("Hi")
        assert len(client.conversations()) == count
        pages = [p for m, p in server.paths() if m == "GET" and "conversations?p=" in p]
        assert len(pages) == 2  # one page more than the server's page size, read through
        assert len(client.conversations(limit=page)) == page
        for info in client.conversations():
            client.conversation(id=info.id).delete()
    assert server.live_conversations == 0


def test_misuse_is_refused_before_any_request(server: ChatServer) -> None:
    with Client(server.url) as client:
        with pytest.raises(ValueError):
            client.conversations(limit=-1)
        with pytest.raises(ValueError):
            client.conversation(id="")
        with pytest.raises(ValueError, match="system prompt"):
            client.conversation(id="0123456789abcdef01234567", system_prompt="x")
        with pytest.raises(ValueError, match="before its first turn"):
            client.conversation().rename("x")
        assert writes(server) == []


def test_the_async_twins(server: ChatServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as client:
            async with client.conversation(keep=True, system_prompt="Be brief.") as conversation:
                await conversation.chat("Hello")
                conversation_id = conversation.id
            assert conversation_id is not None
            assert [c.id for c in await client.conversations()] == [conversation_id]
            async with client.conversation(id=conversation_id) as opened:
                assert len(opened.history) == 2
                await opened.chat("Again")
                await opened.rename("Renamed")
                assert opened.title == "Renamed"
            awaited = await client.conversation(id=conversation_id)
            assert len(awaited.history) == 4
            await awaited.delete()
            assert await client.conversations() == []

    anyio.run(main)
    assert server.live_conversations == 0


def test_delete_every_conversation_of_the_session(server: ChatServer, family: str) -> None:
    with Client(server.url) as client, Client(server.url) as stranger:
        kept(client, "One", "Two", "Three")
        kept(stranger, "Not yours")
        assert client.delete_conversations() == 3
        assert client.conversations() == []
        assert len(stranger.conversations()) == 1  # another session's stay
        assert stranger.delete_conversations() == 1
        assert client.delete_conversations() == 0
    assert server.live_conversations == 0


def test_switching_a_conversations_model_where_the_release_can(server: ChatServer, family: str) -> None:
    from h2o_sdk import UnsupportedError
    from h2o_sdk.testing import MODELS

    with Client(server.url) as client, client.conversation() as conversation:
        conversation.model = MODELS[1]  # before the first turn: the model to create it with, in every family
        conversation.chat("Hi")
        assert conversation.id is not None
        stored = server.conversation(conversation.id)
        assert stored is not None and stored["model"] == MODELS[1]
        if family in ("0.9", "0.10"):
            conversation.model = MODELS[0]  # PATCH {"model"}, from v0.9.3
            stored = server.conversation(conversation.id)
            assert stored is not None and stored["model"] == MODELS[0] and conversation.model == MODELS[0]
            conversation.chat("Again")
        else:
            before = len(writes(server))
            with pytest.raises(UnsupportedError, match=r"v0\.9\.3"):
                conversation.model = MODELS[0]
            assert len(writes(server)) == before and conversation.model == MODELS[1]
