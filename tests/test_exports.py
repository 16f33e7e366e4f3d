"""The public surface is exactly what we mean to export."""

from __future__ import annotations

import h2o_sdk

EXPECTED = {
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AuthenticationError", "BadRequestError",
    "Client", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "DEFAULT_PARAMETERS", "GenerationError", "H2oError",
    "IncompleteStreamError", "InternalServerError", "NotFoundError", "PermissionDeniedError", "ProtocolError",
    "RateLimitError", "Reply", "SessionCookieError", "Stream", "StreamError", "Timeout", "Token",
    "UnprocessableEntityError", "__version__", "format_prompt",
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
