"""The ``"0.9"`` family (chat-ui v0.9.2-v0.9.5, 2024-06 -> 2025-09): the message as a multipart ``data`` part.

Form content types need an ``Origin`` header; tokens come padded with U+0000
and keepAlive updates arrive while the model works (protocol-eras.md 6, 7).
"""

from __future__ import annotations

from typing import Any

from ._family import Family, Prompt
from ._updates import settings_json, tree_body


class _V09(Family):
    def body(self, prompt: Prompt) -> dict[str, Any]:
        # No "tools": its type changed within the family, and a wrong one is a 500 (protocol-eras.md 9.4).
        return {**tree_body(prompt), "web_search": prompt.web_search}

    def settings_body(self, model: str) -> Any:
        return settings_json(model)


FAMILY = _V09(
    name="0.9", releases="v0.9.2-v0.9.5", stream="jsonl", settings="json", multipart=True, tree=True, preprompt=True,
    read_back="page", models="/api/models", superjson=False, ends=True, listing="api",
    patch_model=True, stop_ends_reply=False, web_search=True, files="parts", continues=True,
)
