"""The OpenAI chat-completions wire format, as pure functions: requests in, objects and errors out; no I/O.

Written from OpenAI's API reference and what the official ``openai``
package reads (its tests and ``_streaming.py``): an error object is
``{"error": {"message", "type", "param", "code"}}``; a stream is ``data:``
events of ``chat.completion.chunk`` objects sharing one ``id`` and
``created``, the role in the first delta, a last chunk with an empty delta
and ``finish_reason``, an optional usage chunk with empty ``choices``, then
``data: [DONE]``; an ``error`` event mid-stream is raised by the client as
``APIError``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChatRequest", "GatewayError", "chunk", "completion", "error_body", "new_id", "parse_request", "sse", "usage",
]

#: OpenAI parameters that go to chat-ui 0.4 as TGI generation parameters (name there).
TGI = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "frequency_penalty": "frequency_penalty"}
#: OpenAI parameters no chat-ui release can honour: refused, named.
_REFUSED = ("tools", "tool_choice", "functions", "function_call", "response_format", "logprobs", "top_logprobs",
            "audio", "modalities", "prediction")
#: Sampling parameters only 0.4 can take (the server's configuration decides them from 0.7 on).
SAMPLING = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
#: Accepted and ignored: they change nothing a chat-ui server does.
_HARMLESS = ("model", "messages", "stream", "stream_options", "stop", "max_tokens", "max_completion_tokens", "n",
             "user", "metadata", "store", "parallel_tool_calls", "service_tier", "logit_bias", "reasoning_effort")


class GatewayError(Exception):
    """An OpenAI-shaped error: HTTP ``status`` and the error object's fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class ChatRequest:
    """A chat-completions request, checked.

    Attributes:
        model: The model asked for (``None``: the gateway's).
        system: A leading system message's text.
        turns: The other messages, ``{"role", "content"}`` with text content.
        stream: Stream the answer.
        include_usage: ``stream_options.include_usage``.
        stop: Texts that end the reply.
        max_tokens: At most this many tokens (pieces, where the server re-chunks).
        sampling: Sampling parameters given (OpenAI names).
        ignored: Parameters left out under ``lenient``.
    """

    model: str | None
    system: str | None
    turns: list[dict[str, str]]
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _text(content: Any, index: int) -> str:
    """A message's content as text: a string, or text parts (images are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise GatewayError(400, "only text content parts are supported", param=f"messages[{index}].content")
        return "".join(parts)
    raise GatewayError(400, "a message's content must be a string or text parts", param=f"messages[{index}].content")


def parse_request(body: Any) -> ChatRequest:
    """Check a request body. Raises :class:`GatewayError` (400) naming what is wrong."""
    if not isinstance(body, Mapping):
        raise GatewayError(400, "the request body must be a JSON object")
    for name in _REFUSED:
        if body.get(name) not in (None, False, [], {}) and not (name == "response_format" and isinstance(
                body.get(name), Mapping) and body[name].get("type") == "text"):
            raise GatewayError(400, f"{name} is not supported: a chat-ui server has no such thing", param=name)
    n = body.get("n")
    if n not in (None, 1):
        raise GatewayError(400, "n must be 1: a chat-ui server makes one reply per message", param="n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "messages must be a non-empty list", param="messages")
    system = None
    turns: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise GatewayError(400, "each message must be an object", param=f"messages[{index}]")
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise GatewayError(400, f"a message's role must be system, user or assistant, not {role!r}",
                               param=f"messages[{index}].role")
        text = _text(message.get("content"), index)
        if role == "system" and index == 0:
            system = text
        elif role == "system":
            turns.append({"role": "user", "content": text})  # a later system message is flattened into the prompt
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise GatewayError(400, "the last message must be a non-blank user message", param="messages")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise GatewayError(400, "model must be a string", param="model")
    model = model.strip() or None if model is not None else None  # "" asks for the gateway's model
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)
                             or len(stop) > 4):
        raise GatewayError(400, "stop must be a string or up to 4 non-empty strings", param="stop")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise GatewayError(400, f"{name} must be a positive integer", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise GatewayError(400, "stream_options must be an object", param="stream_options")
    sampling = {}
    for key in SAMPLING:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GatewayError(400, f"{key} must be a number", param=key)
        sampling[key] = value
    unknown = sorted(k for k in body if k not in (*_HARMLESS, *SAMPLING, *_REFUSED))
    if unknown:
        raise GatewayError(400, f"unknown parameter: {unknown[0]}", param=unknown[0])
    return ChatRequest(
        model=model, system=system, turns=turns, stream=body.get("stream") is True,
        include_usage=bool(options and options.get("include_usage")), stop=tuple(stop or ()), max_tokens=limit,
        sampling=sampling,
    )


def new_id() -> tuple[str, int]:
    """A completion's ``id`` and ``created``."""
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def chunk(ident: str, created: int, model: str, delta: Mapping[str, Any], finish_reason: str | None = None,
          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    out: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": None,
                           "choices": [{"index": 0, "delta": dict(delta), "logprobs": None,
                                        "finish_reason": finish_reason}]}
    if extra:
        out.update(extra)
    return out


def usage(completion_tokens: int | None) -> dict[str, Any]:
    """What the server reported: chat-ui 0.4 says how many tokens it generated; nothing says the prompt's."""
    return {"prompt_tokens": None, "completion_tokens": completion_tokens, "total_tokens": None}


def completion(ident: str, created: int, model: str, text: str, finish_reason: str, tokens: int | None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A whole ``chat.completion``."""
    out: dict[str, Any] = {
        "id": ident, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(tokens),
    }
    if extra:
        out.update(extra)
    return out


def sse(obj: Any) -> bytes:
    """One server-sent event, as OpenAI frames it."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
