"""Pure protocol functions: prompt flattening, payloads, event parsing."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from h2o_sdk import DEFAULT_PARAMETERS, GenerationError, ProtocolError, Token, format_prompt
from h2o_sdk._protocol import parse_conversation_id, parse_event, prompt_payload, settings_form


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ("Hi", "Hi"),
        ([{"role": "user", "content": "Hi"}], "Hi"),
        ([{"role": "system", "content": "Only"}], "Only"),
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "System: Be brief.\nUser: Hi\nAssistant:",
        ),
        (
            ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}),
            "User: a\nAssistant: b\nUser: c\nAssistant:",
        ),
        ([{"role": "user", "content": "x", "name": "ignored"}, {"role": "user", "content": "y"}],
         "User: x\nUser: y\nAssistant:"),
    ],
)
def test_format_prompt_matches_the_seed(messages: Any, prompt: str) -> None:
    before = copy.deepcopy(messages)
    assert format_prompt(messages) == prompt
    assert messages == before


@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        ([], ValueError, "empty"),
        ("   ", ValueError, "blank"),
        ([{"role": "user", "content": " "}], ValueError, "blank"),
        (b"Hi", TypeError, "bytes"),
        (42, TypeError, "int"),
        (None, TypeError, "NoneType"),
        (["Hi"], TypeError, r"messages\[0\]"),
        ([{"role": "user"}], ValueError, "'content'"),
        ([{"content": "x"}], ValueError, "'role'"),
        ([{"role": "user", "content": 3}], TypeError, "content"),
        ([{"role": 1, "content": "x"}], TypeError, "role"),
        ([{"role": "usr", "content": "x"}], ValueError, "usr"),
    ],
)
def test_bad_messages_are_refused_clearly(messages: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        format_prompt(messages)


def test_prompt_payload_merges_parameters_over_the_seed_defaults() -> None:
    payload = prompt_payload("Hello", {"temperature": 0.9, "stop": ["\n"], "details": True})
    assert payload["inputs"] == "Hello" and payload["stream"] is True
    assert payload["parameters"] == {**DEFAULT_PARAMETERS, "temperature": 0.9, "stop": ["\n"], "details": True}
    options = payload["options"]
    assert set(options) == {"id", "response_id", "is_retry", "use_cache", "web_search_id"}
    assert uuid.UUID(options["id"]).version == 4 and uuid.UUID(options["response_id"]).version == 4
    assert options["id"] != options["response_id"]
    assert (options["is_retry"], options["use_cache"], options["web_search_id"]) == (False, False, "")


def test_seed_defaults_are_the_documented_ones() -> None:
    assert DEFAULT_PARAMETERS == {"temperature": 0.4, "truncate": 2048, "max_new_tokens": 1024,
                                  "do_sample": True, "repetition_penalty": 1.2, "return_full_text": False}


def test_settings_form() -> None:
    assert settings_form("m") == {"ethicsModalAccepted": "true", "shareConversationsWithModelAuthors": "true",
                                  "ethicsModalAcceptedAt": "", "activeModel": "m", "searchEnabled": "true"}


def test_parse_conversation_id() -> None:
    assert parse_conversation_id({"conversationId": "abc"}) == "abc"
    for bad in (None, {}, {"conversationId": 5}, "text"):
        with pytest.raises(ProtocolError):
            parse_conversation_id(bad)


def test_parse_event_token_and_final() -> None:
    token, final = parse_event('{"token":{"id":5,"text":"Hi","logprob":-0.5,"special":false,"extra":1},'
                               '"generated_text":null,"details":null,"new":2}')
    assert token == Token(5, "Hi", -0.5, False) and final is None
    token, final = parse_event('{"token":{"id":11,"text":"<|endoftext|>","logprob":null,"special":true},'
                               '"generated_text":"Hi","details":null}')
    assert token.special and final is not None and final["generated_text"] == "Hi"


def test_parse_event_error_event() -> None:
    with pytest.raises(GenerationError) as info:
        parse_event('{"error":"Model is overloaded","error_type":"overloaded"}')
    assert info.value.error_type == "overloaded" and str(info.value) == "Model is overloaded"


@pytest.mark.parametrize("data", [
    "not json", "[1, 2]", '"text"', "null", '{"token": null}', '{"nothing": 1}', '{"token": [1]}',
    '{"token": {"text": "a"}}', '{"token": {"id": 1}}', '{"token": {"id": "1", "text": "a"}}',
    '{"token": {"id": 1, "text": 5}}', '{"token": {"id": 1, "text": "a"}} {"token": 2}', "",
])
def test_parse_event_refuses_what_is_not_a_tgi_event(data: str) -> None:
    with pytest.raises(ProtocolError):
        parse_event(data)


@pytest.mark.parametrize("data", [' {"token": {"id": 1, "text": "a"}}', '{"token": {"id": 1, "text": "a"}} \n'])
def test_parse_event_allows_surrounding_whitespace(data: str) -> None:
    assert parse_event(data) == (Token(1, "a"), None)


def test_parse_event_error_type_that_is_not_a_string() -> None:
    with pytest.raises(GenerationError) as info:
        parse_event('{"error": "boom", "error_type": 3}')
    assert info.value.error_type is None


def test_token_from_dict_ignores_unknown_keys() -> None:
    raw = {"id": 7, "text": "a", "logprob": -1.5, "special": True, "new": 1}
    assert Token.from_dict(raw) == Token(7, "a", -1.5, True)
    assert Token.from_dict({"id": 7, "text": "b"}) == Token(7, "b", None, False)


def test_a_lone_surrogate_becomes_u_fffd_and_a_valid_pair_stays() -> None:
    from h2o_sdk._protocol._updates import FINAL, STREAM, parse_update

    token, final = parse_event('{"token":{"id":1,"text":"a\\ud800b","logprob":0,"special":false},'
                               '"generated_text":"a\\udfffb \\ud83d\\ude00","details":null}')
    assert token.text == "a\ufffdb" and final is not None and final["generated_text"] == "a\ufffdb \U0001f600"
    assert parse_update('{"type":"stream","token":"x\\udc00"}') == (STREAM, "x\ufffd")
    kind, update = parse_update('{"type":"finalAnswer","text":"\\ud800!"}')
    assert kind == FINAL and update["text"] == "\ufffd!"
    print(token.text, final["generated_text"])  # the caller's print() works


def test_a_generated_text_that_is_no_string_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="generated_text"):
        parse_event('{"token":{"id":1,"text":"a","logprob":0,"special":true},"generated_text":42,"details":null}')
