"""The ``"0.10"`` family (chat-ui v0.9.6, v0.10 and later; HuggingChat since 2025-10).

No welcome gate; an OpenAI-compatible upstream; ``application/jsonl`` with a
``finished`` update after ``finalAnswer``; stop-generating ends the reply with
``finalAnswer{interrupted: true}``; ``/api/v2`` answers in superjson
(protocol-eras.md 8).
"""

from __future__ import annotations

from typing import Any

from ._family import Family, Prompt
from ._updates import tree_body


class _V010(Family):
    def body(self, prompt: Prompt) -> dict[str, Any]:
        return tree_body(prompt)

    def settings_body(self, model: str) -> Any:
        # What the web UI posts when the welcome modal is closed (v0.10.0 settings_accept):
        # it stores that the modal was seen; the rest are a new session's defaults.
        return {
            "welcomeModalSeen": True, "shareConversationsWithModelAuthors": True, "activeModel": model,
            "customPrompts": {}, "multimodalOverrides": {}, "toolsOverrides": {}, "hidePromptExamples": {},
            "providerOverrides": {},
        }


FAMILY = _V010(
    name="0.10", releases="v0.9.6, v0.10+", stream="jsonl", settings=None, multipart=True, tree=True, preprompt=True,
    read_back="api2", models="/api/v2/models", superjson=True, ends=True, listing="api2", stop_ends_reply=True,
    delete_all="api2", patch_model=True,
    session_settings="/api/v2/user/settings", files="parts", generation_id=True,
)
