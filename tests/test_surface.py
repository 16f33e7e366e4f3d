"""The public surface of each client class is exactly what the README lists (issues 18.3, 19)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio

import h2o_sdk

README = Path(__file__).resolve().parent.parent / "README.md"


def documented() -> dict[str, set[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The public API", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.MULTILINE)
    return {name: set(re.findall(r"`(\w+)`", members)) for name, members in rows}


def public(obj: Any) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def test_the_blocking_classes_expose_what_the_readme_lists() -> None:
    listed = documented()
    with h2o_sdk.Client("http://127.0.0.1:9") as client:  # nothing is sent
        conversation = client.conversation()
        stream = client.stream("Hi")
        assert public(client) == listed["Client"]
        assert public(conversation) == listed["Conversation"]
        assert public(stream) == listed["Stream"]
        stream.close()
        conversation.close()


def test_the_async_classes_expose_what_the_readme_lists() -> None:
    listed = documented()

    async def main() -> None:
        async with h2o_sdk.AsyncClient("http://127.0.0.1:9") as client:
            assert public(client) == listed["AsyncClient"]
            async with client.conversation() as conversation:
                assert public(conversation) == listed["AsyncConversation"]
            stream = client.stream("Hi")
            assert public(stream) == listed["AsyncStream"]
            await stream.aclose()

    anyio.run(main)


def test_the_readme_lists_every_client_class() -> None:
    assert set(documented()) == {"Client", "Conversation", "Stream", "AsyncClient", "AsyncConversation", "AsyncStream"}
