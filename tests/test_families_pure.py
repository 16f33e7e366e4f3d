"""The families' pure parts against the captures: detection decisions, read-back, the JSON-lines reader."""

from __future__ import annotations

from typing import Any

import pytest

from h2o_sdk import IncompleteStreamError, ProtocolError
from h2o_sdk._exceptions import decode_body
from h2o_sdk._protocol import FAMILIES, Prompt, check_protocol, multipart_body, split_system
from h2o_sdk._protocol._detect import PROBES, decide
from h2o_sdk._protocol._readback import branch, messages_from_api2, messages_from_page
from h2o_sdk._stream import Stream, json_lines

from .captures import FAMILY_OF, load
from .test_captures import Exchange

# What each captured release answers to the probes it was asked (the summarize probe was not captured
# from v0.7 on: every route it does not know answers 404 there, as the captures of /api show).
PROBE_CAPTURES = {PROBES[0]: "api_api_v2_feature_flags", PROBES[1]: "api_api_models"}


def _answer(release: str, probe: str) -> tuple[int, str, Any]:
    name = PROBE_CAPTURES.get(probe)
    if name is None:
        return 404, "text/html", "<!DOCTYPE html>"
    capture = load(release, name)
    content_type = capture.header("content-type") or ""
    return capture.status, content_type, decode_body(capture.body, content_type)


@pytest.mark.parametrize("release", [r for r in FAMILY_OF if r != "chat-ui-v0.6"])
def test_the_probe_ladder_names_each_captured_release(release: str) -> None:
    asked = []
    found = None
    for probe in PROBES:
        asked.append(probe)
        found = decide(probe, *_answer(release, probe))
        if found is not None:
            break
    assert found == FAMILY_OF[release]
    assert len(asked) <= (1 if FAMILY_OF[release] == "0.10" else 3)


@pytest.mark.parametrize(("probe", "status", "content_type", "body", "family"), [
    (PROBES[0], 200, "text/html", "<!DOCTYPE html>", None),  # v0.9.4's catch-all page is no answer
    (PROBES[0], 200, "application/json", {"json": {"searchEnabled": True}}, "0.9"),  # 2025 main builds (F2)
    (PROBES[0], 302, "", "", "0.10"),  # a login for everything
    (PROBES[0], 404, "text/html", "<!DOCTYPE html>", None),
    (PROBES[1], 403, "text/plain", "API is disabled", "0.8"),
    (PROBES[1], 200, "application/json", [], "0.8"),
    (PROBES[2], 405, "text/plain", "GET method not allowed", "0.4"),
    (PROBES[2], 404, "text/html", "<!DOCTYPE html>", "0.7"),
    (PROBES[2], 200, "text/html", "<!DOCTYPE html>", None),  # a page for everything: no chat-ui
])
def test_probe_decisions(probe: str, status: int, content_type: str, body: Any, family: str | None) -> None:
    assert decide(probe, status, content_type, body) == family


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
