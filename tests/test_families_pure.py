"""The families' pure parts against the captures: detection decisions, read-back, the JSON-lines reader."""

from __future__ import annotations

from typing import Any

import pytest

from h2o_sdk import IncompleteStreamError, ProtocolError
from h2o_sdk._exceptions import decode_body
from h2o_sdk._protocol import FAMILIES, Prompt, check_protocol, multipart_body, split_system
from h2o_sdk._protocol._detect import PROBES, Answer, app_root, decide, explain
from h2o_sdk._protocol._readback import branch, messages_from_api2, messages_from_page
from h2o_sdk._stream import Stream, json_lines

from .captures import FAMILY_OF, load
from .test_captures import Exchange

# What each captured release answers to the probes it was asked. The summarize probe was not captured
# from v0.7 on: every route v0.7 does not know answers its SvelteKit 404 page, as its /api capture shows.
PROBE_CAPTURES = {PROBES[0]: "api_api_v2_feature_flags", PROBES[1]: "api_api_models", PROBES[2]: "api_api_models"}
BASE = "http://127.0.0.1:4100"


def _answer(release: str, probe: str) -> Answer:
    capture = load(release, PROBE_CAPTURES[probe])
    headers = {name: values[0] for name, values in capture.headers.items()}
    body = decode_body(capture.body, capture.header("content-type") or "")
    if probe == PROBES[2] and isinstance(body, str):
        # The page as SvelteKit serves it at the summarize path: its assets two levels up, not one.
        headers["link"] = headers.get("link", "").replace("<../_app/", "<../../_app/")
        body = body.replace('"../_app/', '"../../_app/').replace('new URL("..",', 'new URL("../..",')
    return Answer(probe, BASE + probe, capture.status, headers, body)


@pytest.mark.parametrize("release", [r for r in FAMILY_OF if r != "chat-ui-v0.6"])
def test_the_probe_ladder_names_each_captured_release(release: str) -> None:
    asked = []
    found = None
    for probe in PROBES:
        asked.append(probe)
        found = decide(_answer(release, probe))
        if found is not None:
            break
    assert found == FAMILY_OF[release]
    assert len(asked) <= (1 if FAMILY_OF[release] == "0.10" else 3)


SVELTE_404 = ({"content-type": "text/html", "x-sveltekit-page": "true"}, "<!DOCTYPE html><html></html>")
NGINX_404 = ({"content-type": "text/html"}, "<html><head><title>404 Not Found</title></head><body><center>"
             "<h1>404 Not Found</h1></center><hr><center>nginx</center></body></html>")
FLAGS = {"json": {"enableAssistants": False, "loginEnabled": False, "isAdmin": False}}
MODELS = [{"id": "org/model", "name": "org/model"}]


@pytest.mark.parametrize(("probe", "status", "headers", "body", "family"), [
    (PROBES[0], 200, {"content-type": "text/html"}, "<!DOCTYPE html>", None),  # v0.9.4's catch-all page
    (PROBES[0], 200, {"content-type": "application/json"}, FLAGS, "0.10"),
    (PROBES[0], 200, {"content-type": "application/json"}, {"json": {"searchEnabled": True}}, "0.9"),  # F2
    (PROBES[0], 200, {"content-type": "application/json"}, {"searchEnabled": True}, "0.9"),  # 2025-06-05..08
    (PROBES[0], 302, {"location": "https://idp.example/oauth/authorize?client_id=x"}, "", "0.10"),  # login
    (PROBES[0], 200, {"content-type": "application/json"}, {"status": "ok"}, None),  # a catch-all JSON 200
    (PROBES[0], 200, {"content-type": "application/json"}, {"json": {"ok": True}}, None),
    (PROBES[0], 301, {"location": "https://chat.example/api/v2/feature-flags"}, "", None),  # http -> https
    (PROBES[0], 404, *SVELTE_404, None),
    (PROBES[1], 403, {"content-type": "text/plain"}, "API is disabled", "0.8"),
    (PROBES[1], 200, {"content-type": "application/json"}, MODELS, "0.8"),
    (PROBES[1], 200, {"content-type": "application/json"}, [{**MODELS[0], "tools": False}], "0.9"),
    (PROBES[1], 200, {"content-type": "application/json"}, [], None),  # chat-ui always lists a model
    (PROBES[1], 200, {"content-type": "application/json"}, [1, 2], None),
    (PROBES[2], 405, {"content-type": "text/plain", "allow": "POST"}, "GET method not allowed", "0.4"),
    (PROBES[2], 405, {"content-type": "text/plain"}, "Method Not Allowed", None),  # a gateway's 405 to all
    (PROBES[2], 404, *SVELTE_404, None),  # a SvelteKit page, but whose app root is not known
    (PROBES[2], 404, {"content-type": "text/html"}, '<link href="../../_app/immutable/x.css">', "0.7"),
    (PROBES[2], 404, {"content-type": "text/html"}, '<script>__sveltekit_1 = {base: new URL("../..", location)}',
     "0.7"),
    (PROBES[2], 404, {"content-type": "text/html", "x-sveltekit-page": "true"}, '{base: ""}', "0.7"),
    (PROBES[2], 404, {"content-type": "text/html", "x-sveltekit-page": "true"}, '{base: "/chat"}', None),
    (PROBES[2], 404, *NGINX_404, None),  # a plain 404 page: no chat-ui
    (PROBES[2], 200, {"content-type": "text/html"}, "<!DOCTYPE html>", None),  # a page for everything
])
def test_probe_decisions(probe: str, status: int, headers: dict[str, str], body: Any, family: str | None) -> None:
    assert decide(Answer(probe, BASE + probe, status, headers, body)) == family


def test_an_unknown_server_is_explained_with_what_each_probe_got() -> None:
    answers = [Answer(p, BASE + p, 404, *NGINX_404) for p in PROBES]
    message = explain(BASE, answers)
    assert "GET /api/v2/feature-flags -> 404 text/html" in message and "summarize -> 404" in message
    assert "chat-ui is often served under /chat" in message


def test_an_http_to_https_redirect_says_to_use_https() -> None:
    answer = Answer(PROBES[0], "http://chat.example/app" + PROBES[0], 301,
                    {"location": "https://chat.example/app/api/v2/feature-flags"}, "")
    assert "use base_url='https://chat.example/app'" in explain("http://chat.example/app", [answer])


def test_a_sveltekit_page_under_a_deeper_url_names_the_app_root() -> None:
    # base_url too deep (.../chat/conversation): chat-ui's 404 page links its assets relative to the app root.
    base = "http://chat.example/chat/conversation"
    page = '<link rel="stylesheet" href="../../../_app/immutable/assets/0.css">'
    answer = Answer(PROBES[0], base + PROBES[0], 404, {"content-type": "text/html"}, page)
    assert app_root(answer) == "http://chat.example/chat"
    assert "whose root is http://chat.example/chat" in explain(base, [answer])


@pytest.mark.parametrize(("release", "reader"), [
    ("chat-ui-v0.7", messages_from_page), ("chat-ui-v0.8.4", messages_from_page),
    ("chat-ui-v0.9.4", messages_from_page), ("chat-ui-v0.10.0", messages_from_api2),
])
def test_read_back_gives_the_current_branch(release: str, reader: Any) -> None:
    # After: Hello -> reply, retry (a sibling reply), edit "Hello again" (a sibling user message) -> reply.
    messages = reader(load(release, "conv_read_after_retry").body)
    roles = [(m["role"], m["content"]) for m in branch(messages) if m["role"] != "system"]
    reply = "Hello! I am a fake h2oGPT. How can I help you today?"
    if release == "chat-ui-v0.7":
        assert roles == [("user", "Hello"), ("assistant", reply)]  # linear: the retry replaced the reply
    else:
        assert roles == [("user", "Hello again"), ("assistant", reply)]  # the edited branch
        assert branch(messages)[0]["role"] == "system"  # the root, whose id the first message goes under


def test_read_back_of_a_foreign_or_deleted_conversation_is_a_protocol_error() -> None:
    body = b'{"type":"data","nodes":[{"type":"data","data":[{}]},{"type":"error","error":{"message":"Not found"}}]}'
    with pytest.raises(ProtocolError, match="Not found"):
        messages_from_page(body)
    with pytest.raises(ProtocolError):
        messages_from_api2(b"<!DOCTYPE html>")


def test_json_lines_strip_padding_and_read_a_glued_last_line() -> None:
    chunks = [b'{"type":"stream","token":"a"}\n', b'{"type":"finalAnswer","text":"a"}\n', b" " * 4096,
              b'{"type":"status","status":"finished"}\n']
    assert list(json_lines(chunks)) == ['{"type":"stream","token":"a"}', '{"type":"finalAnswer","text":"a"}',
                                        '{"type":"status","status":"finished"}']
    # split anywhere, one byte per read
    joined = b"".join(chunks)
    assert list(json_lines([joined[i:i + 1] for i in range(len(joined))])) == list(json_lines(chunks))


def test_json_lines_are_bounded() -> None:
    with pytest.raises(ProtocolError, match="larger than 100 bytes"):
        list(json_lines([b'{"type":"stream","token":"' + b"x" * 200], max_line_size=100))
    assert list(json_lines([b" " * 4096, b" " * 4096, b"{}\n"], max_line_size=1000)) == ["{}"]  # padding only


@pytest.mark.parametrize("body", [b'{"type":"stream","token":"a"}\n{"type":"fin', b'{"type":"stream","token":"a"}\n'])
def test_a_body_ending_before_final_answer_is_incomplete(body: bytes) -> None:
    capture = load("chat-ui-v0.10.0", "msg_send")
    exchange = Exchange(capture)
    exchange.chunks = lambda: iter([body])  # type: ignore[method-assign]
    with pytest.raises(IncompleteStreamError) as info:
        list(Stream(exchange))
    assert info.value.text == "a"


@pytest.mark.parametrize(("line", "message"), [
    ("data:{\"token\":{}}", "server-sent events"),  # a 0.4 server behind protocol="0.7"
    ('{"message":"Conversation not found"}', "not a stream update"),
    ("not json", "not a JSON update"),
])
def test_lines_that_are_no_updates(line: str, message: str) -> None:
    capture = load("chat-ui-v0.10.0", "msg_send")
    exchange = Exchange(capture)
    exchange.chunks = lambda: iter([line.encode() + b"\n"])  # type: ignore[method-assign]
    with pytest.raises(ProtocolError, match=message):
        list(Stream(exchange))


def test_each_family_shapes_the_message_as_its_front_end_does() -> None:
    first = Prompt("Hi", message_id="m", parent_id="root")
    assert FAMILIES["0.7"].body(first)["id"] == "m" and "response_id" in FAMILIES["0.7"].body(first)
    assert FAMILIES["0.8"].body(first) == {"inputs": "Hi", "id": "root", "is_retry": False, "is_continue": False,
                                           "web_search": False, "files": []}
    assert "tools" not in FAMILIES["0.9"].body(first)
    regenerate = Prompt(None, parent_id="reply", is_retry=True)
    assert FAMILIES["0.10"].body(regenerate) == {"id": "reply", "is_retry": True, "is_continue": False}
    body, content_type = multipart_body({"inputs": "Hi"})
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n".encode())
    assert body.endswith(f"--{boundary}--\r\n".encode())


def test_protocol_names_and_system_messages() -> None:
    assert check_protocol("0.10") == "0.10"
    with pytest.raises(ValueError, match=r"'auto', '0\.4'"):
        check_protocol("0.5")
    with pytest.raises(TypeError):
        check_protocol(0.4)
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert split_system(system) == ("Be brief.", [{"role": "user", "content": "Hi"}])
    assert split_system("Hi") == (None, "Hi")
    assert split_system(system[:1]) == (None, system[:1])  # a prompt needs its user part


def test_client_arguments_are_checked_before_any_request() -> None:
    from h2o_sdk import Client

    with pytest.raises(ValueError, match="protocol must be one of"):
        Client("http://127.0.0.1:9", protocol="0.5")
    with pytest.raises(TypeError, match="cookies must be a mapping"):
        Client("http://127.0.0.1:9", cookies=[("hf-chat", "x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError) as info:
        Client("http://127.0.0.1:9", cookies={"hf-chat": "s3cret;evil"})
    assert "s3cret" not in str(info.value)  # a cookie value is a credential
    with Client("http://127.0.0.1:9", protocol="0.9") as client:
        assert client.protocol == "0.9"
