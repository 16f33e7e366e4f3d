"""Issue 11's findings, one test (or table) each: the exception contract, redirects, credentials."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from h2o_sdk import APIStatusError, AuthenticationError, Client, ProtocolError, Timeout, notebook

from .helpers import (
    BASE,
    CID,
    MODEL,
    add_create,
    add_cut_short,
    add_delete,
    add_prompt,
    add_settings,
    calls,
    new_mock,
    reply_events,
)

WORDS = ["Hello", " there", "."]


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with new_mock() as m:
        yield m


# -- 9: everything parsing can raise is an H2oError ----------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"data:{\"token\":{\"id\":1,\"text\":\"\xff\xfe\"}}\n\n",  # not UTF-8
     b"data:" + b"[" * 50_000 + b"\n\n"],  # nested past Python's recursion limit
    ids=["invalid-utf8", "deep-nesting"],
)
def test_garbage_in_the_stream_is_a_protocol_error(mock: responses.RequestsMock, garbage: bytes) -> None:
    add_cut_short(mock, [reply_events(WORDS)[0], garbage])
    with Client(BASE, protocol="0.4") as client, pytest.raises(ProtocolError) as info:
        client.chat("Hi")
    assert info.value.text == WORDS[0]


def test_a_deeply_nested_error_body_is_kept_as_text(mock: responses.RequestsMock) -> None:
    add_settings(mock)
    mock.add(responses.POST, BASE + "/conversation", status=500, body=b"[" * 50_000, content_type="application/json")
    with Client(BASE, protocol="0.4") as client, pytest.raises(APIStatusError) as info:
        client.chat("Hi")
    assert isinstance(info.value.body, str) and info.value.status_code == 500


# -- 10: checked at construction ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": float("inf")}, ValueError, "finite"),
        ({"timeout": float("nan")}, ValueError, "finite"),
        ({"timeout": 1e12}, ValueError, "at most"),
        ({"timeout": (5, 1e10)}, ValueError, "at most"),
        ({"headers": {"X-Name": "Zoë ☃"}}, ValueError, "latin-1"),
        ({"verify": 1}, TypeError, "verify"),
    ],
)
def test_unusable_options_are_refused_at_construction(kwargs: dict[str, Any], error: type[Exception],
                                                      match: str) -> None:
    with pytest.raises(error, match=match):
        Client(BASE, protocol="0.4", **kwargs)


def test_a_timeout_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        Timeout(cleanup=float("inf"))


@pytest.mark.parametrize("url", [" http://chat.test", "http://chat.test\n", "http://chat .test"])
def test_a_base_url_with_spaces_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="spaces"):
        Client(url)


def test_a_latin1_header_is_still_fine(mock: responses.RequestsMock) -> None:
    with Client(BASE, protocol="0.4", headers={"X-Name": "Zoë"}):
        pass


def test_a_lone_surrogate_is_refused_before_any_request(mock: responses.RequestsMock) -> None:
    with Client(BASE, protocol="0.4") as client:
        with pytest.raises(ValueError, match="surrogate"):
            client.stream("Hi \ud800")
        with pytest.raises(ValueError, match="surrogate"):
            client.stream([{"role": "system", "content": "\udfff"}, {"role": "user", "content": "Hi"}])
        with client.conversation() as conversation, pytest.raises(ValueError, match="surrogate"):
            conversation.stream("\ud83d alone")
    assert len(mock.calls) == 0


def test_notebook_show_refuses_what_is_not_a_client() -> None:
    with pytest.raises(TypeError, match="Client or an AsyncClient"):
        notebook.show(object(), "Hi")  # type: ignore[call-overload]


# -- 11: only TGI's parameter names -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("temprature", "temperature"), ("max_tokens", "max_new_tokens"), ("topp", "top_p"), ("timeout", None)],
)
def test_unknown_generation_parameters_are_refused_with_a_suggestion(
    mock: responses.RequestsMock, name: str, suggestion: str | None
) -> None:
    with Client(BASE, protocol="0.4") as client:
        for call in (lambda: client.stream("Hi", **{name: 1}), lambda: client.conversation(**{name: 1})):
            with pytest.raises(TypeError) as info:
                call()
            assert repr(name) in str(info.value)
            if suggestion is not None:
                assert f"did you mean {suggestion!r}" in str(info.value)
        with client.conversation() as conversation, pytest.raises(TypeError, match=repr(name)):
            conversation.stream("Hi", **{name: 1})


def test_every_tgi_parameter_is_accepted(mock: responses.RequestsMock) -> None:
    from h2o_sdk._protocol import TGI_PARAMETERS

    with Client(BASE, protocol="0.4") as client:
        client.stream("Hi", **dict.fromkeys(TGI_PARAMETERS, 1))


# -- 13: redirects ------------------------------------------------------------------------


def test_a_redirect_to_another_host_is_not_followed(mock: responses.RequestsMock) -> None:
    add_settings(mock)
    mock.add(responses.POST, BASE + "/conversation", status=307,
             headers={"Location": "http://elsewhere.test/conversation"})
    with Client(BASE, protocol="0.4", headers={"X-Api-Key": "k"}) as client, pytest.raises(APIStatusError) as info:
        client.chat("Hi")
    assert info.value.status_code == 307 and "elsewhere.test" in str(info.value) and "not followed" in str(info.value)
    assert [call.request.url for call in mock.calls] == [BASE + "/settings", BASE + "/conversation"]


def test_the_prompt_is_never_re_posted_after_a_redirect(mock: responses.RequestsMock) -> None:
    add_settings(mock)
    add_create(mock)
    mock.add(responses.POST, f"{BASE}/conversation/{CID}", status=307,
             headers={"Location": f"{BASE}/v2/conversation/{CID}"})
    add_delete(mock)
    with Client(BASE, protocol="0.4") as client, pytest.raises(APIStatusError, match="never re-posted") as info:
        client.chat("Hi")
    assert info.value.status_code == 307
    assert calls(mock)[-1] == ("DELETE", f"/conversation/{CID}")  # refused, nothing generated: no stop


def test_a_redirect_that_changes_the_method_is_not_followed(mock: responses.RequestsMock) -> None:
    add_settings(mock)
    mock.add(responses.POST, BASE + "/conversation", status=302, headers={"Location": BASE + "/elsewhere"})
    with Client(BASE, protocol="0.4") as client, pytest.raises(APIStatusError, match="307/308"):
        client.chat("Hi")


def test_a_redirect_of_a_write_to_a_login_page_asks_for_cookies(mock: responses.RequestsMock) -> None:
    # chat-ui 0.10 with a login answers an anonymous create with a 302 to its identity provider.
    mock.add(responses.POST, BASE + "/conversation", status=302,
             headers={"Location": "https://huggingface.co/oauth/authorize?client_id=x&state=y"})
    with Client(BASE, protocol="0.10", model="m") as client, pytest.raises(AuthenticationError) as info:
        client.chat("Hi")
    assert info.value.status_code == 302 and "cookies=" in str(info.value) and "state=" not in str(info.value)


# -- 14: credentials in base_url ----------------------------------------------------------


@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "callers-session"])
def test_userinfo_is_basic_auth_and_never_shown(mock: responses.RequestsMock, own_session: bool,
                                                caplog: pytest.LogCaptureFixture) -> None:
    add_settings(mock, match=[matchers.header_matcher({"Referer": BASE + "/"})])
    add_create(mock, status=500, json={"message": "Internal Error"})
    session = None if own_session else requests.Session()
    with caplog.at_level(logging.DEBUG), \
            Client("http://ann:s3cr%40t@chat.test", session=session, protocol="0.4") as client:
        assert client.base_url == BASE and "s3cr" not in repr(client)
        with pytest.raises(APIStatusError) as info:
            client.chat("Hi")
    assert info.value.url == BASE + "/conversation"
    assert "s3cr" not in str(info.value) and "s3cr" not in caplog.text
    # Basic ann:s3cr@t on every request, the same on both paths.
    assert [call.request.headers.get("Authorization") for call in mock.calls] == ["Basic YW5uOnMzY3JAdA=="] * 2
    if session is not None:
        session.close()


def test_userinfo_is_kept_out_of_construction_errors() -> None:
    with pytest.raises(ValueError) as info:
        Client("ftp://ann:s3cret@chat.test")
    assert "s3cret" not in str(info.value)


def test_the_model_is_checked_by_its_id(mock: responses.RequestsMock) -> None:
    add_settings(mock)
    add_create(mock, match=[matchers.json_params_matcher({"model": MODEL})])
    add_prompt(mock, reply_events(WORDS))
    add_delete(mock)
    with Client(BASE, protocol="0.4") as client:
        assert client.chat("Hi").text == "".join(WORDS)
