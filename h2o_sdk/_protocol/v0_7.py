"""The ``"0.7"`` family (chat-ui v0.7, 2023-09 -> 2024-02): flat JSON, a linear history, JSON lines.

The client names the new user message (``id``); the stream is chat-ui's own
updates, and its response never ends after ``finalAnswer`` (protocol-eras.md 3).
"""

from __future__ import annotations

import uuid
from typing import Any

from ._family import Family, Prompt
from ._updates import settings_json


class _V07(Family):
    def body(self, prompt: Prompt) -> dict[str, Any]:
        return {
            "inputs": prompt.inputs,
            "id": prompt.message_id or str(uuid.uuid4()),
            "response_id": str(uuid.uuid4()),
            "is_retry": prompt.is_retry,
            "web_search": prompt.web_search,
            "files": [file.base64() for file in prompt.files],
        }

    def settings_body(self, model: str) -> Any:
        return settings_json(model)


FAMILY = _V07(
    name="0.7", releases="v0.7", stream="jsonl", settings="json", multipart=False, tree=False, preprompt=True,
    read_back="page", models=None, superjson=False, ends=False, stop_ends_reply=True, web_search=True, files="base64",
)
