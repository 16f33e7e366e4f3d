"""The public surface is exactly what we mean to export."""

from __future__ import annotations

import h2o_sdk

EXPECTED = {
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AsyncClient", "AsyncConversation", "AsyncStream",
    "AuthenticationError", "Conversation", "ConversationInfo",
    "BadRequestError", "H2o",
    "Client", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "DEFAULT_PARAMETERS", "GenerationError", "H2oError",
    "IncompleteStreamError", "InternalServerError", "NotFoundError", "PermissionDeniedError", "ProtocolError",
    "RateLimitError", "Reply", "SessionCookieError", "Stream", "StreamError", "Timeout", "Token",
    "UnprocessableEntityError", "UnsupportedError", "__version__", "format_prompt",
    # Stream.events() (issue 21)
    "Event", "File", "Reasoning", "RouterMetadata", "Status", "Title", "ToolCall", "ToolError", "ToolResult",
    "Unknown", "WebSearch",
}


def test_all_is_sorted_and_exact() -> None:
    assert h2o_sdk.__all__ == sorted(h2o_sdk.__all__)
    assert set(h2o_sdk.__all__) == EXPECTED
    for name in h2o_sdk.__all__:
        assert hasattr(h2o_sdk, name), name


def test_every_public_error_derives_from_the_root() -> None:
    for name in h2o_sdk.__all__:
        obj = getattr(h2o_sdk, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, h2o_sdk.H2oError), name


def test_import_does_not_load_the_async_layer() -> None:
    import subprocess
    import sys

    code = "import sys, h2o_sdk; print('anyio' in sys.modules, 'h2o_sdk._async_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert h2o_sdk.AsyncClient.__module__ == "h2o_sdk._async_client"
