"""The ``"0.10"`` family: chat-ui v0.9.6, v0.10 and later (HuggingChat since 2025-10), as v0.10.0 answers.

No welcome gate; ``application/jsonl`` with an early title and ``finished``
after the padding; stop-generating ends the reply with
``finalAnswer{interrupted: true}``; upstream errors carry their status and come
after retries; ``/api/v2`` in superjson (captures ``chat-ui-v0.10.0/``;
protocol-eras.md 8).
"""

from ._era import Era

ERA = Era(
    files="parts", extras=("tool", "file", "reasoning", "router"),
    patch_model=True,
    name="0.10", gate=False, settings_path="/api/v2/user/settings", csrf="origin", tree=True, multipart=True,
    bad_model_status=400, new_errors=True, content_type="application/jsonl", title="early", regroup=None, pad=16,
    keepalive=True, interrupted=True, finished=True, ends=True, after_error="nothing", stop="final", api=True,
    api2=True, page_type=None, catch_all=False, upstream_status=True, prompt_format="chatml",
    model_extra=("hasInferenceAPI", "supportsReasoning", "supportsTools"), summary_extra=("_id", "model"),
    message_updates=True,
)
