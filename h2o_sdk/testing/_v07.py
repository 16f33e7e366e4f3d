"""The ``"0.7"`` family: chat-ui v0.7 (2023-12; HuggingChat 2023-09 -> 2024-02).

A flat JSON message whose ``id`` names the new user message; the stream is
chat-ui's own updates with no content type, and the response never ends
(captures ``chat-ui-v0.7/``; protocol-eras.md 3).
"""

from ._era import Era

ERA = Era(
    body_limit=512 * 1024,
    search="messageType", search_error="An error occurred with the web search", files="base64",
    name="0.7", gate=True, settings_path="/settings", csrf="referer", tree=False, multipart=False,
    bad_model_status=500, new_errors=False, content_type=None, title="status", regroup=None, pad=None,
    keepalive=False, interrupted=False, finished=False, ends=False, after_error="prompt", stop="final", api=False,
    api2=False, page_type="application/json", catch_all=False, upstream_status=False,
    prompt_format="h2ogpt",
)
