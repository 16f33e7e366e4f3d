"""The error tree: status mapping, messages, pickling."""

from __future__ import annotations

import pickle
import time
from email.utils import formatdate

import pytest

import h2o_sdk
from h2o_sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    GenerationError,
    H2oError,
    IncompleteStreamError,
    RateLimitError,
)
from h2o_sdk._exceptions import decode_body, parse_retry_after, status_error


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, h2o_sdk.BadRequestError),
        (401, h2o_sdk.AuthenticationError),
        (403, h2o_sdk.PermissionDeniedError),
        (404, h2o_sdk.NotFoundError),
        (405, APIStatusError),
        (410, APIStatusError),
        (422, h2o_sdk.UnprocessableEntityError),
        (429, RateLimitError),
        (500, h2o_sdk.InternalServerError),
        (503, h2o_sdk.InternalServerError),
    ],
)
def test_status_to_class(status: int, cls: type[APIStatusError]) -> None:
    error = status_error(status, body={"message": "m"}, method="POST", url="http://x/conversation")
    assert type(error) is cls
    assert isinstance(error, H2oError) and error.status_code == status


@pytest.mark.parametrize(
    ("body", "message", "error_type"),
    [
        ({"error": "You need to accept the welcome modal first"}, "You need to accept the welcome modal first", None),
        ({"message": "Conversation not found"}, "Conversation not found", None),
        ({"type": "error", "error": {"message": "Internal Error"}}, "Internal Error", None),
        ({"error": "Model is overloaded", "error_type": "overloaded"}, "Model is overloaded", "overloaded"),
        ("Non-JSON form requests need to have a referer", "Non-JSON form requests need to have a referer", None),
        ("<!DOCTYPE html><html><head><title>Internal Error</title>", "Internal Error", None),
    ],
)
def test_server_message_leads_str(body: object, message: str, error_type: str | None) -> None:
    error = status_error(418, reason="Teapot", body=body, method="DELETE", url="http://x/c")
    assert str(error) == f"{message} (HTTP 418 Teapot from DELETE http://x/c)"
    assert error.error_type == error_type and error.body == body


def test_message_without_body() -> None:
    error = status_error(502, reason="Bad Gateway", body="", method="GET", url="u")
    assert str(error) == "HTTP 502 Bad Gateway from GET u"


def test_decode_body() -> None:
    assert decode_body(b'{"a":1}', "application/json") == {"a": 1}
    assert decode_body(b'{"a":1}', "") == {"a": 1}
    assert decode_body(b"plain", "text/plain") == "plain"
    assert decode_body(b"{broken", "application/json") == "{broken"


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert when is not None and 25 < when <= 30
    error = status_error(429, body={"message": "slow down"}, headers={"Retry-After": "7"})
    assert isinstance(error, RateLimitError) and error.retry_after == 7.0


def test_timeout_is_a_builtin_timeout_and_a_connection_error() -> None:
    error = APITimeoutError("t", method="GET", url="u", connect=True)
    assert isinstance(error, TimeoutError) and isinstance(error, APIConnectionError) and error.connect


@pytest.mark.parametrize(
    "error",
    [
        H2oError("root"),
        APIConnectionError("refused", method="POST", url="http://x"),
        APITimeoutError("slow", method="GET", url="http://x", connect=False),
        status_error(429, reason="Too Many Requests", body={"message": "m"}, headers={"Retry-After": "2"},
                     method="POST", url="http://x"),
        GenerationError("boom", error_type="generation", text="partial", conversation_id="c"),
        IncompleteStreamError("cut", text="part", conversation_id="c"),
        h2o_sdk.SessionCookieError("secure"),
    ],
)
def test_every_error_pickles_with_its_evidence(error: H2oError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
