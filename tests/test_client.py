"""The blocking Client against ``responses``: request shapes, lifecycle, errors, retries."""

from __future__ import annotations

import http.client
import json
import logging
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from responses import matchers

import h2o_sdk
from h2o_sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    Client,
    GenerationError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionCookieError,
    UnprocessableEntityError,
)

from .helpers import (
    BASE,
    CID,
    MODEL,
    add_create,
    add_cut_short,
    add_delete,
    add_prompt,
    add_settings,
    add_stop,
    calls,
    error_event,
    new_mock,
    reply_events,
    token_event,
)

WORDS = ["Hello", "!", " How", " can", " I", " help", "?"]
TEXT = "".join(WORDS)
FLOW = [("POST", "/settings"), ("POST", "/conversation"), ("POST", f"/conversation/{CID}")]
DELETE = ("DELETE", f"/conversation/{CID}")
STOP = ("POST", f"/conversation/{CID}/stop-generating")


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with new_mock() as m:
        yield m


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("h2o_sdk._http._sleep", lambda seconds, abort=None: slept.append(seconds) or True)
    return slept


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(BASE, protocol="0.4") as c:
        yield c


def happy(mock: responses.RequestsMock, chunks: list[bytes] | None = None) -> None:
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, reply_events(WORDS) if chunks is None else chunks)
    add_delete(mock)


# -- the happy path and request shapes -------------------------------------------------


def prompt_matcher(**expected_parameters: Any) -> Any:
    def match(request: Any) -> tuple[bool, str]:
        body = json.loads(request.body)
        wanted = {**h2o_sdk.DEFAULT_PARAMETERS, **expected_parameters}
        if body["parameters"] != wanted:
            return False, f"parameters {body['parameters']} != {wanted}"
        if body["inputs"] != "System: Be brief.\nUser: Hi\nAssistant:" or body["stream"] is not True:
            return False, f"inputs/stream {body}"
        if set(body["options"]) != {"id", "response_id", "is_retry", "use_cache", "web_search_id"}:
            return False, f"options {body['options']}"
        return True, ""

    return match


def test_request_shapes_of_the_whole_flow(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock, match=[
        matchers.urlencoded_params_matcher({
            "ethicsModalAccepted": "true", "shareConversationsWithModelAuthors": "true",
            "ethicsModalAcceptedAt": "", "activeModel": MODEL, "searchEnabled": "true"}, allow_blank=True),
        matchers.header_matcher({"Referer": BASE + "/"}),
    ])
    add_create(mock, match=[matchers.json_params_matcher({"model": MODEL}),
                            matchers.header_matcher({"Cookie": "hf-chat=abc"})])
    add_prompt(mock, reply_events(WORDS), match=[
        prompt_matcher(stop=["User:"], seed=7, details=True, temperature=0.1),
        matchers.header_matcher({"Cookie": "hf-chat=abc"}),
    ])
    add_delete(mock, match=[matchers.header_matcher({"Cookie": "hf-chat=abc"})])

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    reply = client.chat(messages, stop=["User:"], seed=7, details=True, temperature=0.1)
    assert reply.text == TEXT and str(reply) == TEXT and reply.conversation_id == CID
    assert calls(mock) == [*FLOW, DELETE]
    ua = mock.calls[0].request.headers["User-Agent"]
    assert ua.startswith(f"h2o-sdk/{h2o_sdk.__version__} ")


def test_stream_yields_text_and_sets_reply(mock: responses.RequestsMock, client: Client) -> None:
    happy(mock)
    with client.stream("Hi", keep_tokens=True) as stream:
        assert calls(mock) == []  # lazy: nothing sent before iteration
        assert list(stream) == WORDS
    assert stream.reply is not None and stream.reply.text == TEXT
    assert stream.reply.tokens[-1].special and len(stream.reply.tokens) == len(WORDS) + 1
    assert calls(mock) == [*FLOW, DELETE]


def test_settings_accepted_once_per_client_and_model_override(mock: responses.RequestsMock, client: Client) -> None:
    happy(mock)
    add_create(mock, cid="a" * 24, match=[matchers.json_params_matcher({"model": "other/model"})])
    add_prompt(mock, reply_events(["ok"]), cid="a" * 24)
    add_delete(mock, cid="a" * 24)
    assert client.chat("one").text == TEXT
    assert client.wait_cleanup()  # the mock answers in order: let the background delete go first
    assert client.chat("two", model="other/model").text == "ok"
    assert [c for c in calls(mock) if c[1] == "/settings"] == [("POST", "/settings")]


def test_settings_303_is_accepted_and_not_followed(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock, status=303, headers={"Location": BASE + "/"}, body=b"")
    add_create(mock)
    add_prompt(mock, reply_events(WORDS))
    add_delete(mock)
    assert client.chat("Hi").text == TEXT
    assert calls(mock) == [*FLOW, DELETE]


def test_secure_cookie_over_http_is_reported(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock, cookie="hf-chat=abc; Path=/; HttpOnly; Secure; SameSite=None")
    with pytest.raises(SessionCookieError, match=r"Secure.*https://"):
        client.chat("Hi")
    assert calls(mock) == [("POST", "/settings")]


def test_secure_cookie_over_https_is_fine(mock: responses.RequestsMock) -> None:
    https = BASE.replace("http://", "https://")
    mock.add(responses.POST, https + "/settings", json={"type": "redirect"},
             headers={"Set-Cookie": "hf-chat=abc; Path=/; HttpOnly; Secure; SameSite=None"})
    mock.add(responses.POST, https + "/conversation", json={"conversationId": CID},
             match=[matchers.header_matcher({"Cookie": "hf-chat=abc"})])
    mock.add(responses.POST, f"{https}/conversation/{CID}", body=b"".join(reply_events(WORDS)))
    mock.add(responses.DELETE, f"{https}/conversation/{CID}", body=b"")
    with Client(https, protocol="0.4") as client:
        assert client.chat("Hi").text == TEXT


def test_405_accepts_the_welcome_modal_again_once(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock)
    add_create(mock, status=405, json={"error": "You need to accept the welcome modal first"})
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, reply_events(WORDS))
    add_delete(mock)
    assert client.chat("Hi").text == TEXT


def test_405_twice_is_raised(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock)
    add_create(mock, status=405, json={"error": "You need to accept the welcome modal first"})
    add_settings(mock)
    add_create(mock, status=405, json={"error": "You need to accept the welcome modal first"})
    with pytest.raises(APIStatusError, match="welcome modal") as info:
        client.chat("Hi")
    assert info.value.status_code == 405 and info.value.method == "POST"
    assert info.value.url == BASE + "/conversation"


# -- cleanup on every exit path --------------------------------------------------------


def test_break_mid_stream_stops_generation_then_deletes(mock: responses.RequestsMock, client: Client) -> None:
    happy(mock)
    mock.remove(responses.DELETE, f"{BASE}/conversation/{CID}")
    add_stop(mock)
    add_delete(mock)
    for text in client.stream("Hi"):
        assert text == "Hello"
        break
    assert calls(mock) == [*FLOW, STOP, DELETE]


def test_close_mid_stream(mock: responses.RequestsMock, client: Client) -> None:
    add_cut_short(mock, reply_events(WORDS))
    stream = client.stream("Hi")
    assert next(stream) == "Hello"
    stream.close()
    stream.close()
    assert calls(mock) == [*FLOW, STOP, DELETE]
    assert stream.text == "Hello" and stream.reply is None


def test_exception_in_the_callers_loop(mock: responses.RequestsMock, client: Client) -> None:
    add_cut_short(mock, reply_events(WORDS))
    with pytest.raises(ZeroDivisionError), client.stream("Hi") as stream:
        for _ in stream:
            1 / 0  # noqa: B018
    assert calls(mock) == [*FLOW, STOP, DELETE]


def test_keyboard_interrupt_in_the_loop(mock: responses.RequestsMock, client: Client) -> None:
    add_cut_short(mock, reply_events(WORDS))
    with pytest.raises(KeyboardInterrupt), client.stream("Hi") as stream:
        for _ in stream:
            raise KeyboardInterrupt
    assert calls(mock) == [*FLOW, STOP, DELETE]


def test_error_status_on_prompt_deletes_without_stop(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, status=422, json={"error": "Input validation error: `inputs` must have less than 2048 tokens.",
                                       "error_type": "validation"})
    add_delete(mock)
    with pytest.raises(UnprocessableEntityError, match="must have less than 2048") as info:
        client.chat("Hi")
    assert info.value.error_type == "validation" and info.value.status_code == 422
    assert calls(mock) == [*FLOW, DELETE]


def test_in_band_error_deletes_without_stop(mock: responses.RequestsMock, client: Client) -> None:
    happy(mock, reply_events(WORDS)[:3] + [error_event("Request failed during generation: OOM", "generation")])
    with pytest.raises(GenerationError, match="OOM") as info:
        client.chat("Hi")
    assert info.value.text == "".join(WORDS[:3]) and info.value.conversation_id == CID
    assert calls(mock) == [*FLOW, DELETE]


def test_connection_cut_mid_stream(mock: responses.RequestsMock, client: Client) -> None:
    add_cut_short(mock, [*reply_events(WORDS)[:3], http.client.IncompleteRead(b"")])
    with pytest.raises(IncompleteStreamError) as info:
        client.chat("Hi")
    assert info.value.text == "".join(WORDS[:3])
    assert isinstance(info.value.__cause__, APIConnectionError)
    assert calls(mock) == [*FLOW, STOP, DELETE]


def test_clean_end_without_last_event(mock: responses.RequestsMock, client: Client) -> None:
    add_cut_short(mock, reply_events(WORDS)[:2])
    with pytest.raises(IncompleteStreamError):
        client.chat("Hi")
    assert calls(mock) == [*FLOW, STOP, DELETE]


def test_idle_timeout_mid_stream(mock: responses.RequestsMock, client: Client) -> None:
    add_cut_short(mock, [reply_events(WORDS)[0], TimeoutError("timed out")])
    stream = client.stream("Hi")
    with pytest.raises(APITimeoutError) as info:
        list(stream)
    assert not info.value.connect and stream.text == "Hello"
    assert calls(mock) == [*FLOW, STOP, DELETE]


def test_failed_cleanup_is_logged_and_does_not_replace_the_error(
    mock: responses.RequestsMock, client: Client, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, status=500, json={"error": "CUDA out of memory", "error_type": "generation"})
    for _ in range(3):
        add_delete(mock, status=503, body="upstream down")
    with caplog.at_level(logging.WARNING, logger="h2o_sdk"), pytest.raises(InternalServerError, match="CUDA"):
        client.chat("Hi")
    assert calls(mock) == [*FLOW, DELETE, DELETE, DELETE]
    assert f"could not delete conversation {CID}" in caplog.text and "upstream down" in caplog.text


def test_cleanup_is_bounded_by_the_cleanup_timeout(mock: responses.RequestsMock, sleeps: list[float]) -> None:
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, status=422, json={"error": "bad"})
    add_delete(mock, status=429, headers={"Retry-After": "30"}, json={"message": "later"})
    add_delete(mock)
    with Client(BASE, protocol="0.4", timeout=h2o_sdk.Timeout(cleanup=1.0)) as client, \
            pytest.raises(UnprocessableEntityError):
        client.chat("Hi")
    assert sleeps == []  # a 30 s Retry-After does not fit in a 1 s cleanup budget
    assert calls(mock) == [*FLOW, DELETE, DELETE]  # the failed delete tried once more by close()


# -- errors and retries -----------------------------------------------------------------


def test_referer_error_is_a_permission_error_with_the_servers_text(mock: responses.RequestsMock,
                                                                    client: Client) -> None:
    mock.add(responses.POST, BASE + "/settings", status=403, body="Non-JSON form requests need to have a referer",
             content_type="text/plain")
    with pytest.raises(PermissionDeniedError) as info:
        client.chat("Hi")
    assert str(info.value).startswith("Non-JSON form requests need to have a referer (HTTP 403")
    assert info.value.body == "Non-JSON form requests need to have a referer"


def test_create_is_retried_only_when_nothing_was_done(mock: responses.RequestsMock, client: Client,
                                                      sleeps: list[float]) -> None:
    # 503 and 429 say the server did nothing: retried with backoff.
    add_settings(mock)
    add_create(mock, status=503, json={"message": "Service Unavailable"})
    add_create(mock, status=429, headers={"retry-after": "0.2"}, json={"message": "later"})
    add_create(mock, status=503, json={"message": "Service Unavailable"})
    with pytest.raises(InternalServerError, match="Service Unavailable"):
        client.chat("Hi")
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and sleeps[1] == 0.2  # lower-case Retry-After
    # A 500 may have created it: never retried (issue 11.6).
    add_create(mock, status=500, json={"message": "Internal Error"})
    with pytest.raises(InternalServerError, match="Internal Error"):
        client.chat("Hi")
    assert len(sleeps) == 2


@pytest.mark.parametrize("lost", [requests.ReadTimeout("slow"), requests.ConnectionError("reset")],
                         ids=["read-timeout", "reset"])
def test_create_is_not_retried_once_written(mock: responses.RequestsMock, client: Client, sleeps: list[float],
                                            lost: Exception) -> None:
    add_settings(mock)
    mock.add(responses.POST, BASE + "/conversation", body=lost)
    with pytest.raises(APIConnectionError) as info:
        client.chat("Hi")
    assert not info.value.connect and sleeps == [] and len(mock.calls) == 2


def test_create_is_retried_after_a_failed_connect(mock: responses.RequestsMock, client: Client,
                                                  sleeps: list[float]) -> None:
    add_settings(mock)
    mock.add(responses.POST, BASE + "/conversation", body=requests.ConnectTimeout("no route"))
    add_create(mock)
    add_prompt(mock, reply_events(WORDS))
    add_delete(mock)
    assert client.chat("Hi").text == TEXT
    assert len(sleeps) == 1


def test_settings_retries_connection_errors_and_honours_retry_after(
    mock: responses.RequestsMock, client: Client, sleeps: list[float]
) -> None:
    mock.add(responses.POST, BASE + "/settings", body=requests.ConnectionError("refused"))
    mock.add(responses.POST, BASE + "/settings", status=429, headers={"Retry-After": "2"}, json={"message": "wait"})
    happy(mock)
    assert client.chat("Hi").text == TEXT
    assert sleeps[1] == 2.0 and len(sleeps) == 2


def test_max_retries_zero_disables(mock: responses.RequestsMock, sleeps: list[float]) -> None:
    mock.add(responses.POST, BASE + "/settings", body=requests.ConnectionError("refused"))
    with Client(BASE, protocol="0.4", max_retries=0) as client, \
            pytest.raises(APIConnectionError, match="refused") as info:
        client.chat("Hi")
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert sleeps == []


def test_prompt_is_not_retried_when_the_connection_closed_before_the_status_line(
    mock: responses.RequestsMock, client: Client, sleeps: list[float]
) -> None:
    # chat-ui got the prompt and goes on generating: a retry would store the turn twice (11.7).
    add_settings(mock)
    add_create(mock)
    mock.add(responses.POST, f"{BASE}/conversation/{CID}", body=requests.ConnectionError("reset"))
    add_stop(mock)
    add_delete(mock)
    with pytest.raises(APIConnectionError) as info:
        client.chat("Hi")
    assert not info.value.connect and sleeps == []
    assert calls(mock)[-2:] == [STOP, DELETE]


def test_prompt_is_retried_after_a_connect_timeout(mock: responses.RequestsMock, client: Client,
                                                   sleeps: list[float]) -> None:
    add_settings(mock)
    add_create(mock)
    mock.add(responses.POST, f"{BASE}/conversation/{CID}", body=requests.ConnectTimeout("no route"))
    add_prompt(mock, reply_events(WORDS))
    add_delete(mock)
    assert client.chat("Hi").text == TEXT
    assert len(sleeps) == 1


def test_prompt_not_retried_after_a_refusal_or_a_read_timeout(mock: responses.RequestsMock, client: Client,
                                                               sleeps: list[float]) -> None:
    add_settings(mock)
    add_create(mock)
    add_prompt(mock, status=422, json={"error": "Input validation error", "error_type": "validation"})
    add_delete(mock)
    with pytest.raises(UnprocessableEntityError) as info:
        client.chat("Hi")
    assert info.value.error_type == "validation"
    assert client.wait_cleanup()
    add_create(mock)
    mock.add(responses.POST, f"{BASE}/conversation/{CID}", body=requests.ReadTimeout("slow"))
    add_stop(mock)
    add_delete(mock)
    with pytest.raises(APITimeoutError):
        client.chat("Hi")
    assert sleeps == []
    assert calls(mock)[-3:] == [("POST", f"/conversation/{CID}"), STOP, DELETE]


def test_bad_messages_send_nothing(mock: responses.RequestsMock, client: Client) -> None:
    with pytest.raises(ValueError, match="empty"):
        client.stream([])
    with pytest.raises(TypeError):
        client.chat([{"role": "user", "content": None}])  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="model"):
        client.stream("Hi", model=" ")
    with pytest.raises(ValueError, match="JSON values"):
        client.stream("Hi", temperature=float("nan"))
    with pytest.raises(TypeError, match="JSON values"):
        client.chat("Hi", seed=object())
    with client.conversation(stop=[b"User:"]) as conversation, pytest.raises(TypeError, match="JSON values"):
        conversation.stream("Hi")
    assert calls(mock) == []


def test_caller_list_is_not_modified(mock: responses.RequestsMock, client: Client) -> None:
    happy(mock)
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    client.chat(messages)
    assert messages == [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base_url": "gpt-gm.h2o.ai"}, ValueError),
        ({"base_url": 5}, TypeError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "10"}, TypeError),
        ({"timeout": (1, 2, 3)}, ValueError),
        ({"max_retries": -1}, ValueError),
        ({"proxy": "ftp://proxy:21"}, ValueError),
        ({"session": object()}, TypeError),
        ({"headers": [("a", "b")]}, TypeError),
        ({"model": ""}, ValueError),
        ({"headers": {"X-Team": "a\r\nX-Evil: 1"}}, ValueError),
        ({"base_url": "http://chat test"}, ValueError),
    ],
)
def test_constructor_misuse(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Client(**kwargs)


def test_closed_client_refuses_new_streams() -> None:
    client = Client(BASE, protocol="0.4")
    client.close()
    client.close()
    with pytest.raises(ValueError, match="closed"):
        client.stream("Hi")


class RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.seen.append({"method": method, **kwargs})
        return super().request(method, url, *args, **kwargs)


def test_callers_session_proxy_headers_and_timeouts_apply_to_every_request(mock: responses.RequestsMock) -> None:
    happy(mock)
    session = RecordingSession()
    with Client(BASE, protocol="0.4", session=session, proxy="http://proxy.test:3128", headers={"X-Team": "a"},
                timeout=(3, 7)) as client:
        client.chat("Hi")
    assert [seen["method"] for seen in session.seen] == ["POST", "POST", "POST", "DELETE"]
    for seen in session.seen:
        assert seen["proxies"] == {"http": "http://proxy.test:3128", "https": "http://proxy.test:3128"}
        assert seen["headers"]["X-Team"] == "a"
    assert session.seen[2]["timeout"] == (3, 7)
    assert session.seen[3]["timeout"][1] <= 5  # cleanup is bounded
    session.get_adapter(BASE)  # the caller's session is still open and usable
    session.close()


def _wire(request: requests.PreparedRequest) -> dict[str, Any]:
    """What goes on the wire, without the per-call random message ids."""
    body: Any = request.body
    if request.headers.get("Content-Type") == "application/json":
        body = json.loads(body)
        body.get("options", {}).pop("id", None)
        body.get("options", {}).pop("response_id", None)
    return {"method": request.method, "url": request.url, "headers": list(request.headers.items()), "body": body}


def test_own_session_sends_what_requests_would_prepare(mock: responses.RequestsMock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The client's own session skips Session.prepare_request: the bytes must not change.
    monkeypatch.setenv("NO_PROXY", "*")
    sent = []
    for session in (None, requests.Session()):
        happy(mock)
        with Client(BASE, protocol="0.4", session=session, headers={"X-Team": "a", "Accept-Encoding": None}) as client:  # type: ignore[dict-item]
            client.chat("Hi", temperature=0.2)
        sent.append([_wire(call.request) for call in mock.calls])
        mock.calls.reset()
        if session is not None:
            session.close()
    assert len(sent[0]) == 4 and sent[0] == sent[1]
    assert "Accept-Encoding" not in dict(sent[0][0]["headers"])  # None removes a header, as in requests


def test_redirects_are_followed_with_the_session_cookie(mock: responses.RequestsMock, client: Client) -> None:
    add_settings(mock)
    mock.add(responses.POST, BASE + "/conversation", status=307, headers={"Location": BASE + "/v2/conversation"})
    mock.add(responses.POST, BASE + "/v2/conversation", json={"conversationId": CID},
             match=[matchers.header_matcher({"Cookie": "hf-chat=abc"}), matchers.json_params_matcher({"model": MODEL})])
    add_prompt(mock, reply_events(WORDS))
    add_delete(mock)
    assert client.chat("Hi").text == TEXT


def test_netrc_credentials_are_sent(mock: responses.RequestsMock, tmp_path: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine chat.test login ann password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    happy(mock)
    with Client(BASE, protocol="0.4") as client:
        client.chat("Hi")
    assert [call.request.headers.get("Authorization") for call in mock.calls] == ["Basic YW5uOnMzY3JldA=="] * 4


def test_cookies_are_never_logged(mock: responses.RequestsMock, client: Client,
                                  caplog: pytest.LogCaptureFixture) -> None:
    happy(mock)
    with caplog.at_level(logging.DEBUG):
        client.chat("Hi")
    assert caplog.records and "abc" not in caplog.text


# -- chunk boundaries through the real urllib3 read path ----------------------------------


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_split_offset_through_urllib3(mock: responses.RequestsMock, client: Client, sep: bytes) -> None:
    words = ["Grüße", " 🙂", " ok"]
    body = b"".join(reply_events(words, sep=sep))
    add_settings(mock)
    for cut in range(1, len(body)):
        add_create(mock)
        add_prompt(mock, [body[:cut], body[cut:]])
        add_delete(mock)
        assert client.chat("Hi").text == "".join(words), cut
        assert client.wait_cleanup()


def test_tokens_are_yielded_as_their_bytes_arrive(mock: responses.RequestsMock, client: Client) -> None:
    delivered: list[int] = []

    def body() -> Iterator[bytes]:
        for index, event in enumerate(reply_events(WORDS)):
            delivered.append(index)
            yield event

    add_settings(mock)
    add_create(mock)
    add_prompt(mock, body())
    add_delete(mock)
    for index, _ in enumerate(client.stream("Hi")):
        assert delivered[-1] == index  # no read ahead: the token came from the last read


def test_server_error_event_first_is_a_validation_error(mock: responses.RequestsMock, client: Client) -> None:
    happy(mock, [error_event("Input validation error: `temperature` must be strictly positive", "validation")])
    with pytest.raises(GenerationError, match="strictly positive") as info:
        client.chat("Hi", temperature=0)
    assert info.value.error_type == "validation" and info.value.text == ""


def test_final_token_that_is_not_special(mock: responses.RequestsMock, client: Client) -> None:
    body = token_event(1, "a") + token_event(2, "b", final="ab", details={"finish_reason": "length",
                                                                         "generated_tokens": 2, "seed": None})
    happy(mock, [body])
    reply = client.chat("Hi", max_new_tokens=2, details=True)
    assert (reply.text, reply.finish_reason, reply.generated_tokens) == ("ab", "length", 2)


def test_socks_proxies_need_the_socks_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("socks") is None:
        with pytest.raises(ValueError, match=r"h2o_sdk\[socks\]"):
            Client(BASE, protocol="0.4", proxy="socks5://127.0.0.1:1080")
    else:  # pragma: no cover - with the extra installed
        with Client(BASE, protocol="0.4", proxy="socks5h://127.0.0.1:1080") as client:
            assert client._http._proxies == {"http": "socks5h://127.0.0.1:1080", "https": "socks5h://127.0.0.1:1080"}


def test_a_rate_limited_prompt_is_retried_after_the_lower_case_retry_after(
    mock: responses.RequestsMock, client: Client, sleeps: list[float]
) -> None:
    # chat-ui (Node) and TGI send header names in lower case (every capture); 429 says nothing was done.
    add_settings(mock)
    add_create(mock)
    for _ in range(3):
        add_prompt(mock, status=429, headers={"retry-after": "0.1"},
                   json={"error": "Model is overloaded", "error_type": "overloaded"})
    add_delete(mock)
    with pytest.raises(RateLimitError) as info:
        client.chat("Hi")
    assert sleeps == [0.1, 0.1]
    assert info.value.retry_after == 0.1 and info.value.headers["Retry-After"] == "0.1"
    assert "retry-after" in info.value.headers and info.value.error_type == "overloaded"
    assert calls(mock)[-1] == DELETE and STOP not in calls(mock)


def test_error_headers_match_in_any_case_and_leave_the_session_cookie_out(
    mock: responses.RequestsMock, client: Client
) -> None:
    add_settings(mock)
    add_create(mock, status=404, json={"message": "Not found"},
               headers={"set-cookie": "hf-chat=secret; Path=/", "X-Request-Id": "r1"})
    with pytest.raises(NotFoundError) as info:
        client.chat("Hi")
    headers = info.value.headers
    assert headers["x-request-id"] == "r1" and headers.get("X-REQUEST-ID") == "r1"
    assert "Set-Cookie" not in headers and "secret" not in repr(info.value.__dict__)
    assert pickle.loads(pickle.dumps(info.value)).headers == headers
