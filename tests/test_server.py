"""The local emulator speaks protocol.md, checked with plain requests over real sockets."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3

from h2o_sdk.testing import MODELS, ChatServer, Fault, serve, tokenize

FORM = {"ethicsModalAccepted": "true", "shareConversationsWithModelAuthors": "true", "ethicsModalAcceptedAt": "",
        "activeModel": MODELS[0], "searchEnabled": "true"}


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with serve(pace=0) as s:
        yield s


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def accept(http: requests.Session, server: ChatServer) -> requests.Response:
    return http.post(server.url + "/settings", data=FORM, headers={"Referer": server.url + "/"},
                     allow_redirects=False)


def create(http: requests.Session, server: ChatServer) -> str:
    response = http.post(server.url + "/conversation", json={"model": MODELS[0]})
    assert response.status_code == 200
    cid = response.json()["conversationId"]
    assert isinstance(cid, str) and re.fullmatch(r"[0-9a-f]{24}", cid)
    return cid


def body(inputs: str = "Hello", **parameters: Any) -> dict[str, Any]:
    return {"inputs": inputs, "parameters": {"temperature": 0.4, **parameters}, "stream": True,
            "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False,
                        "use_cache": False, "web_search_id": ""}}


def events(response: requests.Response) -> list[dict[str, Any]]:
    raw = response.content.decode()
    return [json.loads(block[5:]) for block in raw.split("\n\n") if block.startswith("data:")]


def test_settings_answers_json_redirect_and_sets_the_dev_cookie(server: ChatServer, http: requests.Session) -> None:
    response = accept(http, server)
    assert response.status_code == 200
    assert response.json() == {"type": "redirect", "status": 303, "location": server.url + "/"}
    cookie = response.headers["set-cookie"]
    assert re.match(r"hf-chat=[0-9a-f-]{36}; Path=/; Expires=.+ GMT; HttpOnly; SameSite=Lax$", cookie)


def test_settings_answers_303_to_browsers_and_secure_cookie_in_production(http: requests.Session) -> None:
    with serve(pace=0, secure_cookie=True) as server:
        response = http.post(server.url + "/settings", data=FORM,
                             headers={"Referer": server.url + "/", "Accept": "text/html"}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == server.url + "/"
    assert response.content == b""
    assert response.headers["set-cookie"].endswith("HttpOnly; Secure; SameSite=None")


@pytest.mark.parametrize(
    ("headers", "status", "text"),
    [
        ({}, 403, "Non-JSON form requests need to have a referer"),
        ({"Referer": "https://evil.example/"}, 403, "Invalid referer for POST request"),
    ],
)
def test_form_posts_need_a_same_origin_referer(server: ChatServer, http: requests.Session,
                                               headers: dict[str, str], status: int, text: str) -> None:
    response = http.post(server.url + "/settings", data=FORM, headers=headers)
    assert (response.status_code, response.text) == (status, text)
    assert response.headers["content-type"] == "text/plain" and "set-cookie" not in response.headers


def test_welcome_gate(server: ChatServer, http: requests.Session) -> None:
    response = http.post(server.url + "/conversation", json={"model": MODELS[0]})
    assert response.status_code == 405 and response.json() == {"error": "You need to accept the welcome modal first"}
    assert "set-cookie" not in response.headers
    plain = http.post(server.url + "/conversation", data="x",
                      headers={"Content-Type": "text/plain", "Referer": server.url + "/", "Accept": "*/*"})
    assert (plain.status_code, plain.text) == (405, "You need to accept the welcome modal first")
    # An empty ethicsModalAccepted saves settings without accepting; "false" counts as accepted (2.3)
    accept_with = {**FORM, "ethicsModalAccepted": ""}
    http.post(server.url + "/settings", data=accept_with, headers={"Referer": server.url + "/"})
    assert http.post(server.url + "/conversation", json={"model": MODELS[0]}).status_code == 405
    http.post(server.url + "/settings", data={**FORM, "ethicsModalAccepted": "false"},
              headers={"Referer": server.url + "/"})
    assert http.post(server.url + "/conversation", json={"model": MODELS[0]}).status_code == 200


def test_gate_can_be_switched_off(http: requests.Session) -> None:
    with serve(pace=0, require_welcome=False) as server:
        cid = create(http, server)
        assert http.delete(f"{server.url}/conversation/{cid}").status_code == 200


def test_settings_errors(server: ChatServer, http: requests.Session) -> None:
    bad_model = http.post(server.url + "/settings", data={**FORM, "activeModel": "nope"},
                          headers={"Referer": server.url + "/"})
    assert bad_model.status_code == 500
    assert bad_model.json() == {"type": "error", "error": {"message": "Internal Error"}}
    as_json = http.post(server.url + "/settings", json=FORM)
    assert as_json.status_code == 500


def test_create_errors(server: ChatServer, http: requests.Session) -> None:
    accept(http, server)
    for payload in ({}, {"model": "unknown/model"}):
        response = http.post(server.url + "/conversation", json=payload)
        assert (response.status_code, response.json()) == (500, {"message": "Internal Error"})
    broken = http.post(server.url + "/conversation", data=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 500
    html = http.post(server.url + "/conversation", json={"model": "x"}, headers={"Accept": None})  # type: ignore[dict-item]
    assert html.status_code == 500 and html.headers["content-type"].startswith("text/html")
    shared = http.post(server.url + "/conversation", json={"model": MODELS[0], "fromShare": "abcdefg"})
    assert (shared.status_code, shared.json()) == (404, {"message": "Conversation not found"})


def test_stream_framing_is_tgi_through_chat_ui(server: ChatServer, http: requests.Session) -> None:
    accept(http, server)
    cid = create(http, server)
    response = http.post(f"{server.url}/conversation/{cid}", json=body(details=True, seed=5), stream=True)
    headers = response.headers
    assert (headers["content-type"], headers["cache-control"], headers["x-accel-buffering"],
            headers["transfer-encoding"]) == ("text/event-stream", "no-cache", "no", "chunked")
    assert "set-cookie" in headers
    chunks = list(response.raw.read_chunked())
    response.close()
    # one event per chunk, "data:" without a space, compact JSON, "\n\n"
    assert all(c.startswith(b"data:{") and c.endswith(b"}\n\n") and b"\n\n" not in c[:-2] for c in chunks)
    parsed = [json.loads(c[5:]) for c in chunks]
    *tokens, last = parsed
    assert all(e["generated_text"] is None and e["details"] is None and not e["token"]["special"] for e in tokens)
    assert last["token"] == {"id": 11, "text": "<|endoftext|>", "logprob": last["token"]["logprob"], "special": True}
    assert last["generated_text"] == "".join(e["token"]["text"] for e in tokens)
    assert last["details"] == {"finish_reason": "eos_token", "generated_tokens": len(tokens) + 1, "seed": 5}
    assert b" " not in chunks[0][: chunks[0].index(b"{")]


def test_details_only_when_asked_and_length_and_stop_sequences(server: ChatServer, http: requests.Session) -> None:
    server.reply = "One two three. Four five."
    accept(http, server)
    cid = create(http, server)
    plain = events(http.post(f"{server.url}/conversation/{cid}", json=body()))
    assert plain[-1]["details"] is None and plain[-1]["generated_text"] == "One two three. Four five."
    short = events(http.post(f"{server.url}/conversation/{cid}", json=body(max_new_tokens=2, details=True)))
    assert [e["token"]["text"] for e in short] == ["One", " two"]
    assert not short[-1]["token"]["special"] and short[-1]["details"]["finish_reason"] == "length"
    stopped = events(http.post(f"{server.url}/conversation/{cid}", json=body(stop=["three"], details=True)))
    assert stopped[-1]["generated_text"] == "One two three"  # the stop text stays in (3.2)
    assert stopped[-1]["details"]["finish_reason"] == "stop_sequence"


def test_validation_error_is_the_only_event(server: ChatServer, http: requests.Session) -> None:
    accept(http, server)
    cid = create(http, server)
    response = http.post(f"{server.url}/conversation/{cid}", json=body(temperature=0))
    assert response.status_code == 200
    assert events(response) == [{"error": "Input validation error: `temperature` must be strictly positive",
                                 "error_type": "validation"}]
    assert server.conversation(cid)["messages"] == []  # type: ignore[index]


@pytest.mark.parametrize(
    "payload",
    [{"inputs": "  ", "options": {}}, {"inputs": "hi"}, {"inputs": "hi", "options": {"id": "not-a-uuid"}},
     {"inputs": 5, "options": {}}, {"inputs": "hi", "options": {"is_retry": "yes"}}],
)
def test_prompt_body_validation_is_a_500(server: ChatServer, http: requests.Session, payload: dict[str, Any]) -> None:
    accept(http, server)
    cid = create(http, server)
    response = http.post(f"{server.url}/conversation/{cid}", json=payload)
    assert (response.status_code, response.json()) == (500, {"message": "Internal Error"})


def test_conversations_belong_to_their_session(server: ChatServer, http: requests.Session) -> None:
    accept(http, server)
    cid = create(http, server)
    with requests.Session() as other:
        accept(other, server)
        foreign = other.post(f"{server.url}/conversation/{cid}", json=body())
        assert (foreign.status_code, foreign.json()) == (404, {"message": "Conversation not found"})
        assert other.delete(f"{server.url}/conversation/{cid}").status_code == 404
    malformed = http.post(server.url + "/conversation/not-an-objectid", json=body())
    assert malformed.status_code == 500
    unknown = http.post(server.url + "/conversation/" + "0" * 24, json=body())
    assert unknown.status_code == 404


def test_history_is_saved_after_success_and_builds_the_next_prompt(server: ChatServer,
                                                                   http: requests.Session) -> None:
    prompts: list[str] = []
    server.reply = lambda prompt: prompts.append(prompt) or f"reply {len(prompts)}"  # type: ignore[func-returns-value]
    accept(http, server)
    cid = create(http, server)
    first = body("first question")
    http.post(f"{server.url}/conversation/{cid}", json=first).close()
    http.post(f"{server.url}/conversation/{cid}", json=body("second question")).close()
    assert prompts[1] == ("<|prompt|>first question<|endoftext|><|answer|>reply 1<|endoftext|>"
                          "<|prompt|>second question<|endoftext|><|answer|>")
    stored = server.conversation(cid)
    assert stored is not None and [m["content"] for m in stored["messages"]] == [
        "first question", "reply 1", "second question", "reply 2"]
    assert stored["messages"][0]["id"] == first["options"]["id"]
    assert stored["messages"][1]["id"] == first["options"]["response_id"]
    # is_retry regenerates from an earlier user message, dropping what followed it
    retry = body("first question again")
    retry["options"].update(id=first["options"]["id"], is_retry=True)
    http.post(f"{server.url}/conversation/{cid}", json=retry).close()
    assert prompts[2] == "<|prompt|>first question again<|endoftext|><|answer|>"
    stored = server.conversation(cid)
    assert stored is not None and [m["content"] for m in stored["messages"]] == ["first question again", "reply 3"]


def test_failed_streams_save_nothing(server: ChatServer, http: requests.Session) -> None:
    accept(http, server)
    cid = create(http, server)
    server.inject(Fault(error_after=2))
    assert "error" in events(http.post(f"{server.url}/conversation/{cid}", json=body()))[-1]
    server.inject(Fault(drop_after=2))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.post(f"{server.url}/conversation/{cid}", json=body())
    assert server.conversation(cid) == {"title": "Untitled 1", "model": MODELS[0], "messages": []}


WORDS_REPLY = " ".join(f"w{i}" for i in range(40))


def _stop_mid_stream(http: requests.Session, server: ChatServer, cid: str) -> tuple[list[str], bool]:
    """Read a reply, stop it after its first token; the texts received and whether the body ended properly."""
    response = http.post(f"{server.url}/conversation/{cid}", json=body(), stream=True)
    texts: list[str] = []
    ended = True
    try:
        for chunk in response.raw.read_chunked():
            texts.append(json.loads(chunk[5:])["token"]["text"])
            if len(texts) == 1:
                assert http.post(f"{server.url}/conversation/{cid}/stop-generating").status_code == 200
    except urllib3.exceptions.ProtocolError:
        ended = False  # no terminating chunk
    response.close()
    return texts, ended


def test_stop_generating_is_noticed_on_a_poll_and_saves_the_unsent_token(http: requests.Session) -> None:
    # As the real 0.4 does: tokens go on until its poll of stopped generations notices the stop,
    # then the body is cut, and the token of the chunk where it noticed is saved but never sent.
    with serve(pace=0.05, reply=WORDS_REPLY, stop_poll=0.3) as server:
        accept(http, server)
        cid = create(http, server)
        texts, ended = _stop_mid_stream(http, server, cid)
        assert not ended and 2 <= len(texts) < 40
        stored = server.conversation(cid)
        assert stored is not None and len(stored["messages"]) == 2
        words = tokenize(WORDS_REPLY)
        assert stored["messages"][1]["content"] == "".join(texts) + words[len(texts)]


def test_a_second_stop_of_a_conversation_within_stop_ignore_is_not_noticed(http: requests.Session) -> None:
    with serve(pace=0.01, reply=WORDS_REPLY, stop_poll=0.05, stop_ignore=30) as server:
        accept(http, server)
        cid = create(http, server)
        assert not _stop_mid_stream(http, server, cid)[1]
        texts, ended = _stop_mid_stream(http, server, cid)  # the server ignores this stop: the reply runs on
        assert ended and "".join(t for t in texts if t != "<|endoftext|>") == WORDS_REPLY


def test_delete_then_404_and_patch_title(server: ChatServer, http: requests.Session) -> None:
    accept(http, server)
    cid = create(http, server)
    patched = http.patch(f"{server.url}/conversation/{cid}", json={"title": "Rivers"})
    assert patched.status_code == 200 and server.conversation(cid)["title"] == "Rivers"  # type: ignore[index]
    assert http.patch(f"{server.url}/conversation/{cid}", json={"title": ""}).status_code == 500
    first = http.delete(f"{server.url}/conversation/{cid}")
    assert (first.status_code, first.content) == (200, b"") and "content-type" not in first.headers
    second = http.delete(f"{server.url}/conversation/{cid}")
    assert (second.status_code, second.json()) == (404, {"message": "Conversation not found"})
    assert server.live_conversations == 0


@pytest.mark.parametrize("status", [422, 429, 500, 503])
def test_prompt_status_faults_pass_tgi_bodies_through(server: ChatServer, http: requests.Session,
                                                      status: int) -> None:
    accept(http, server)
    cid = create(http, server)
    server.inject(Fault(status=status))
    response = http.post(f"{server.url}/conversation/{cid}", json=body())
    assert response.status_code == status and set(response.json()) == {"error", "error_type"}
    if status in (429, 503):
        assert response.headers["Retry-After"] == "1"
    assert http.post(f"{server.url}/conversation/{cid}", json=body()).status_code == 200  # once only


@pytest.mark.parametrize(("ending", "expected"), [("\r\n", b"\r\n\r\n"), ("\r", b"\r\r")])
def test_line_endings_close_delimited_and_tiny_chunks(http: requests.Session, ending: str, expected: bytes) -> None:
    with serve(pace=0, faults=[Fault(line_ending=ending, close_delimited=True, chunk_size=7, times=99)]) as server:
        accept(http, server)
        cid = create(http, server)
        response = http.post(f"{server.url}/conversation/{cid}", json=body())
        assert "transfer-encoding" not in response.headers and response.headers.get("connection") == "close"
        assert response.content.startswith(b"data:{") and response.content.endswith(b"}" + expected)


def test_keepalive_comments_during_a_stall(http: requests.Session) -> None:
    with serve(pace=0, keepalive=0.05, faults=[Fault(stall=0.3, stall_after=1)]) as server:
        accept(http, server)
        cid = create(http, server)
        raw = http.post(f"{server.url}/conversation/{cid}", json=body()).content
    assert raw.count(b":\n\n") >= 3
    assert raw.index(b":\n\n") > raw.index(b"data:")


def test_rate_limit(http: requests.Session) -> None:
    with serve(pace=0, rate_limit=1) as server:
        accept(http, server)
        cid = create(http, server)
        assert http.post(f"{server.url}/conversation/{cid}", json=body()).status_code == 200
        limited = http.post(f"{server.url}/conversation/{cid}", json=body())
        assert limited.status_code == 429 and "too many messages" in limited.json()["message"]


def test_binds_loopback_and_records_requests(server: ChatServer, http: requests.Session) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    accept(http, server)
    assert server.requests[-1].method == "POST" and server.requests[-1].path == "/settings"
    assert server.requests[-1].status == 200


def test_close_wakes_idle_keepalive_connections() -> None:
    server = serve(pace=0)
    connection = socket.create_connection(server.url.removeprefix("http://").split(":"))  # type: ignore[arg-type]
    try:
        server.close()  # returns although a connection is open and idle
    finally:
        connection.close()


def test_the_conversation_page_answers_as_the_real_0_4() -> None:
    # Observed on the real chat-ui 0.4 on loopback: the page for browsers, the endpoint's 405 otherwise.
    from h2o_sdk import Client

    html = {"Accept": "text/html"}
    with serve(pace=0) as server, Client(server.url) as client:
        with client.conversation(keep=True) as conversation:
            conversation.chat("Hi")
        cid = conversation.id
        session = requests.Session()
        session.cookies = client._http._session.cookies
        alive = session.get(f"{server.url}/conversation/{cid}", headers=html)
        assert alive.status_code == 200 and "<title>Untitled 1</title>" in alive.text
        plain = session.get(f"{server.url}/conversation/{cid}", headers={"Accept": "*/*"})
        assert (plain.status_code, plain.text, plain.headers["allow"]) == (405, "GET method not allowed",
                                                                         "POST, PATCH, DELETE")
        assert plain.headers["content-type"] == "text/plain;charset=UTF-8"
        foreign = requests.get(f"{server.url}/conversation/{cid}", headers=html)
        assert foreign.status_code == 403 and "use the 'share' feature" in foreign.text
        assert requests.get(f"{server.url}/conversation/zzz", headers=html).status_code == 500
        client._operations.delete(cid)
        assert client.wait_cleanup()
        gone = session.get(f"{server.url}/conversation/{cid}", headers=html)
        assert gone.status_code == 404 and "Conversation not found." in gone.text
        assert session.get(f"{server.url}/conversation/{cid}", headers={"Accept": "*/*"}).status_code == 405
        session.close()


def test_the_default_reply_quotes_only_the_last_user_message() -> None:
    from h2o_sdk.testing import default_reply

    history = ("<|prompt|>Name three rivers.<|endoftext|><|answer|>Nile, Amazon, Yangtze.<|endoftext|>"
               "<|prompt|>Which is the longest?<|endoftext|><|answer|>")
    reply = default_reply(history)
    assert "“Which is the longest?”" in reply and "Name three rivers" not in reply
    assert reply == default_reply("<|prompt|>Which is the longest?<|endoftext|><|answer|>")


def test_a_prompt_with_a_lone_surrogate_streams_as_the_real_0_4_does() -> None:
    # The real 0.4 (Node) passes it through and escapes it in its JSON; it is no dead stream.
    from h2o_sdk import Client

    body = {"inputs": "bad \ud800 here", "parameters": {}, "stream": True,
            "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False,
                        "use_cache": False, "web_search_id": ""}}
    with serve(pace=0) as server, Client(server.url) as client:
        with client.conversation(keep=True) as conversation:
            conversation.chat("Hi")
        session = requests.Session()
        session.cookies = client._http._session.cookies
        raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \\ud800
        answer = session.post(f"{server.url}/conversation/{conversation.id}", data=raw,
                              headers={"Content-Type": "application/json"})
        assert answer.status_code == 200 and b"\\ud800" in answer.content
        last = json.loads(answer.content.strip().split(b"\n")[-1][5:])
        assert "\ud800" in last["generated_text"]
        client._operations.delete(conversation.id)
        session.close()
