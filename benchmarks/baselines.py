"""The seed document's client flow, as it documents it: an aiohttp session with a
Referer header, the settings form, a conversation, the prompt, ``data:`` lines,
and a DELETE. Kept as the seed wrote it, as a baseline and a compatibility check."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientSession


def seed_format_prompt(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


async def seed_stream(url: str, model: str, messages: list[dict[str, str]], **kwargs: Any) -> AsyncIterator[str]:
    headers = {"Referer": url + "/"}
    async with ClientSession(headers=headers) as session:
        data = {
            "ethicsModalAccepted": "true",
            "shareConversationsWithModelAuthors": "true",
            "ethicsModalAcceptedAt": "",
            "activeModel": model,
            "searchEnabled": "true",
        }
        async with session.post(f"{url}/settings", data=data) as response:
            response.raise_for_status()
        async with session.post(f"{url}/conversation", json={"model": model}) as response:
            response.raise_for_status()
            conversation_id = (await response.json())["conversationId"]
        data = {
            "inputs": seed_format_prompt(messages),
            "parameters": {
                "temperature": 0.4,
                "truncate": 2048,
                "max_new_tokens": 1024,
                "do_sample": True,
                "repetition_penalty": 1.2,
                "return_full_text": False,
                **kwargs,
            },
            "stream": True,
            "options": {
                "id": str(uuid.uuid4()),
                "response_id": str(uuid.uuid4()),
                "is_retry": False,
                "use_cache": False,
                "web_search_id": "",
            },
        }
        async with session.post(f"{url}/conversation/{conversation_id}", json=data) as response:
            start = "data:"
            async for raw in response.content:
                line = raw.decode("utf-8")
                if line and line.startswith(start):
                    event = json.loads(line[len(start) : -1])
                    if not event["token"]["special"]:
                        yield event["token"]["text"]
        async with session.delete(f"{url}/conversation/{conversation_id}") as response:
            response.raise_for_status()
