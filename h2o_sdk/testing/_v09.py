"""The ``"0.9"`` family: chat-ui v0.9.2-v0.9.5 (2024-06 -> 2025-09), as v0.9.4 answers.

The message is a multipart ``data`` part (form CSRF: an ``Origin`` is
required); tokens padded with U+0000 to 16 characters, keepAlive updates, a
late title from the model, no ``finalAnswer`` after an error; stop is still
ignored (captures ``chat-ui-v0.9.4/``; protocol-eras.md 6).
"""

from ._era import Era

ERA = Era(
    search="subtype", search_error="An error occurred", files="parts", continues=True, extras=("tool", "file"),
    patch_model=True,
    name="0.9", gate=True, settings_path="/settings", csrf="origin", tree=True, multipart=True,
    bad_model_status=400, new_errors=True, content_type="text/event-stream", title="late", regroup=None, pad=16,
    keepalive=True, interrupted=True, finished=False, ends=True, after_error="nothing", stop="ignored", api=True,
    api2=False, page_type="text/sveltekit-data", catch_all=True, upstream_status=False,
    prompt_format="chatml",
    model_extra=("tools", "hasInferenceAPI"), summary_extra=("assistantId", "modelTools"), message_updates=True,
)
