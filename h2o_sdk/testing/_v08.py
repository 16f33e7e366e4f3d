"""The ``"0.8"`` family: chat-ui v0.8.0-v0.9.1 (2024-02 -> 2024-06), as v0.8.4 answers.

Conversation trees with a system root and ``id`` = the parent; tokens
regrouped into 5-character pieces; stop-generating has no effect (a chat-ui
bug); ``/api/*`` appears (captures ``chat-ui-v0.8.4/``; protocol-eras.md 4).
"""

from ._era import Era

ERA = Era(
    body_limit=512 * 1024,
    search="messageType", search_error="An error occurred", files="base64", continues=True, continue_whole=True,
    name="0.8", gate=True, settings_path="/settings", csrf="origin", tree=True, multipart=False,
    bad_model_status=400, new_errors=True, content_type="text/event-stream", title="status", regroup=5, pad=None,
    keepalive=False, interrupted=False, finished=False, ends=True, after_error="so-far", stop="ignored", api=True,
    api2=False, page_type="application/json", catch_all=False, upstream_status=False,
    prompt_format="chatml",
)
