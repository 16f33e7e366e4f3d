"""h2o_sdk: a client for HuggingFace chat-ui servers of every era (the h2oGPT chat service first).

Example::

    import h2o_sdk

    with h2o_sdk.Client() as client:
        for text in client.stream("Write a haiku about rivers"):
            print(text, end="", flush=True)

Importing the package does no I/O and starts nothing.
"""

import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._async_client import AsyncClient, AsyncConversation, AsyncStream
    from ._client import Client
    from ._conversation import Conversation
    from ._events import (
        Event,
        File,
        Reasoning,
        RouterMetadata,
        Status,
        Title,
        ToolCall,
        ToolError,
        ToolResult,
        Unknown,
        WebSearch,
    )
    from ._exceptions import (
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        GenerationError,
        H2oError,
        IncompleteStreamError,
        InternalServerError,
        NotFoundError,
        PermissionDeniedError,
        ProtocolError,
        RateLimitError,
        SessionCookieError,
        StreamError,
        UnprocessableEntityError,
        UnsupportedError,
    )
    from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, DEFAULT_PARAMETERS, format_prompt
    from ._provider import H2o
    from ._stream import Stream
    from ._types import ConversationInfo, Reply, Timeout, Token

logging.getLogger("h2o_sdk").addHandler(logging.NullHandler())

# Where each public name lives. Nothing is imported until a name is used, so
# `import h2o_sdk` (and the pytest plugin, which every pytest process where the
# SDK is installed loads) costs nothing; requests and anyio load on first use.
_MODULES = {
    **dict.fromkeys(("AsyncClient", "AsyncConversation", "AsyncStream"), "_async_client"),
    "Client": "_client",
    "Conversation": "_conversation",
    **dict.fromkeys(
        ("Event", "File", "Reasoning", "RouterMetadata", "Status", "Title", "ToolCall", "ToolError", "ToolResult",
         "Unknown", "WebSearch"),
        "_events",
    ),
    **dict.fromkeys(
        (
            "APIConnectionError", "APIStatusError", "APITimeoutError", "AuthenticationError", "BadRequestError",
            "GenerationError", "H2oError", "IncompleteStreamError", "InternalServerError", "NotFoundError",
            "PermissionDeniedError", "ProtocolError", "RateLimitError", "SessionCookieError", "StreamError",
            "UnprocessableEntityError", "UnsupportedError",
        ),
        "_exceptions",
    ),
    **dict.fromkeys(("DEFAULT_BASE_URL", "DEFAULT_MODEL", "DEFAULT_PARAMETERS", "format_prompt"), "_protocol"),
    "H2o": "_provider",
    "Stream": "_stream",
    **dict.fromkeys(("ConversationInfo", "Reply", "Timeout", "Token"), "_types"),
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'h2o_sdk' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"h2o_sdk.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncConversation",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "Conversation",
    "ConversationInfo",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PARAMETERS",
    "Event",
    "File",
    "GenerationError",
    "H2o",
    "H2oError",
    "IncompleteStreamError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "Reasoning",
    "Reply",
    "RouterMetadata",
    "SessionCookieError",
    "Status",
    "Stream",
    "StreamError",
    "Timeout",
    "Title",
    "Token",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "Unknown",
    "UnprocessableEntityError",
    "UnsupportedError",
    "WebSearch",
    "__version__",
    "format_prompt",
]
