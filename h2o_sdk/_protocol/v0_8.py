"""The ``"0.8"`` family (chat-ui v0.8.0-v0.9.1, 2024-02 -> 2024-06): a message tree, still a JSON body.

``id`` is the parent message (the system root after create, the last reply
after each turn); the server never sends the new ids, so the client reads
the conversation back (protocol-eras.md 4, 5).
"""

from __future__ import annotations

from typing import Any

from ._family import Family, Prompt
from ._updates import settings_json, tree_body


class _V08(Family):
    def body(self, prompt: Prompt) -> dict[str, Any]:
        # Base64 strings, as v0.8.x takes them (v0.9.0 and v0.9.1 took objects: protocol-eras.md 4).
        return {**tree_body(prompt), "web_search": prompt.web_search, "files": [f.base64() for f in prompt.files]}

    def settings_body(self, model: str) -> Any:
        return settings_json(model)


FAMILY = _V08(
    name="0.8", releases="v0.8.0-v0.9.1", stream="jsonl", settings="json", multipart=False, tree=True,
    preprompt=True, read_back="page", models="/api/models", superjson=False, ends=True, listing="api",
    stop_ends_reply=False, web_search=True, files="base64", continues=True, continue_whole=True,
)
