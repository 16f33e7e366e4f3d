"""The ``"0.4"`` family (chat-ui v0.3-v0.6, gpt-gm.h2o.ai): TGI parameters in, TGI server-sent events out.

``shared/protocol.md`` in full; pure functions, no I/O.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from .._exceptions import GenerationError, ProtocolError
from .._types import Token
from ._common import check_text, clean_text
from ._family import Family, Prompt

_raw_decode = json.JSONDecoder().raw_decode

#: The seed's generation parameters (protocol.md 1); caller keywords override them.
DEFAULT_PARAMETERS: Mapping[str, Any] = {
    "temperature": 0.4,
    "truncate": 2048,
    "max_new_tokens": 1024,
    "do_sample": True,
    "repetition_penalty": 1.2,
    "return_full_text": False,
}

#: The generation parameters TGI's ``/generate_stream`` understands (protocol.md 3.4 and
#: TGI's own ``GenerateParameters``); chat-ui 0.4 forwards ``parameters`` to it unread, and
#: TGI ignores unknown names, so a misspelt one would vanish without a word.
TGI_PARAMETERS = frozenset({
    "adapter_id", "best_of", "decoder_input_details", "details", "do_sample", "frequency_penalty", "grammar",
    "max_new_tokens", "repetition_penalty", "return_full_text", "seed", "stop", "temperature", "top_k",
    "top_n_tokens", "top_p", "truncate", "typical_p", "watermark",
})


def settings_form(model: str) -> dict[str, str]:
    """The welcome-modal form of ``POST /settings`` (protocol.md 1, step 1).

    chat-ui coerces any non-empty value to true; ``ethicsModalAcceptedAt`` is
    sent empty as the web page does (the server stamps the time itself).
    """
    return {
        "ethicsModalAccepted": "true",
        "shareConversationsWithModelAuthors": "true",
        "ethicsModalAcceptedAt": "",
        "activeModel": model,
        "searchEnabled": "true",
    }


def prompt_payload(
    inputs: str,
    parameters: Mapping[str, Any],
    *,
    message_id: str | None = None,
    is_retry: bool = False,
) -> dict[str, Any]:
    """The JSON body of ``POST /conversation/{id}`` (protocol.md 1).

    Args:
        inputs: The prompt text.
        parameters: Caller parameters, merged over :data:`DEFAULT_PARAMETERS`.
        message_id: The user message id (``options.id``); a new UUID4 if omitted.
        is_retry: Regenerate the reply to ``message_id``.

    Raises:
        TypeError: A parameter name TGI does not know (the message suggests
            the closest one), or a parameter that is not a JSON value.
        ValueError: A parameter is not a JSON value (NaN and infinities
            included, which JSON cannot carry), or text with a lone surrogate.
    """
    check_parameter_values(parameters)
    check_text(inputs, "the prompt")
    merged = {**DEFAULT_PARAMETERS, **parameters}
    return {
        "inputs": inputs,
        "parameters": merged,
        "stream": True,
        "options": {
            "id": message_id or str(uuid.uuid4()),
            "response_id": str(uuid.uuid4()),
            "is_retry": is_retry,
            "use_cache": False,
            "web_search_id": "",
        },
    }


def check_parameter_values(parameters: Mapping[str, Any]) -> None:
    """Refuse unknown generation parameters, and values JSON cannot carry.

    Raises:
        TypeError: An unknown name (see :func:`check_parameters`), or a value
            that is not a JSON value.
        ValueError: NaN, an infinity, or nesting too deep for JSON.
    """
    check_parameters(parameters)
    try:
        json.dumps(parameters, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"generation parameters must be JSON values: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"generation parameters must be JSON values: {exc}") from None


def check_parameters(parameters: Mapping[str, Any]) -> None:
    """Refuse generation parameters TGI does not know.

    Raises:
        TypeError: Naming each unknown parameter and the closest valid name.
    """
    unknown = sorted(name for name in parameters if name not in TGI_PARAMETERS)
    if not unknown:
        return
    import difflib  # only on this error path: it costs ~1 ms of import time

    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(TGI_PARAMETERS), n=1, cutoff=0.5)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise TypeError(
        f"unknown generation parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
        f"TGI takes {', '.join(sorted(TGI_PARAMETERS))}"
    )


def parse_event(data: str) -> tuple[Token, Mapping[str, Any] | None]:
    """Parse the data of one TGI stream event (protocol.md 3.2, 3.3).

    Returns:
        The event's token, and for the last event (the one carrying
        ``generated_text``) the whole event object, else ``None``.

    Raises:
        GenerationError: An in-band ``{"error", "error_type"}`` event.
        ProtocolError: Anything that is not a TGI event.
    """
    try:
        # raw_decode skips json.loads' two whitespace scans: this runs once per token.
        event, end = _raw_decode(data)
        if end != len(data) and data[end:].strip():
            raise ValueError("extra data after the JSON value")
    except ValueError:
        try:
            event = json.loads(data)  # leading whitespace, or a real error
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"unparsable stream event: {data[:200]!r}") from exc
    except RecursionError as exc:  # JSON nested deeper than Python's stack
        raise ProtocolError(f"unparsable stream event (nested too deeply): {data[:200]!r}") from exc
    raw = event.get("token") if isinstance(event, dict) else None
    if raw is None:
        if isinstance(event, dict) and "error" in event:
            error_type = event.get("error_type")
            raise GenerationError(
                str(event["error"]), error_type=error_type if isinstance(error_type, str) else None
            )
        raise ProtocolError(f"stream event without a token: {data[:200]!r}")
    try:
        token = Token(raw["id"], raw["text"], raw.get("logprob"), raw.get("special") is True)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed token in stream event: {data[:200]!r}") from exc
    if not isinstance(token.text, str) or not isinstance(token.id, int):
        raise ProtocolError(f"malformed token in stream event: {data[:200]!r}")
    final = event.get("generated_text")
    if final is not None and not isinstance(final, str):
        raise ProtocolError(f"a stream event whose generated_text is no string: {data[:200]!r}")
    if not token.text.isascii():
        token = Token(token.id, clean_text(token.text, data), token.logprob, token.special)
    if final is not None and not final.isascii():
        event = {**event, "generated_text": clean_text(final, data)}
    return token, (event if final is not None else None)


def reply_fields(final: Mapping[str, Any]) -> dict[str, Any]:
    """``text``, ``finish_reason``, ``generated_tokens`` and ``seed`` from the last event."""
    details = final.get("details")
    details = details if isinstance(details, Mapping) else {}
    return {
        "text": str(final["generated_text"]),
        "finish_reason": details.get("finish_reason"),
        "generated_tokens": details.get("generated_tokens"),
        "seed": details.get("seed"),
    }


class _V04(Family):
    def check_parameters(self, parameters: Mapping[str, Any]) -> None:
        check_parameters(parameters)

    def body(self, prompt: Prompt) -> dict[str, Any]:
        assert prompt.inputs is not None
        return prompt_payload(
            prompt.inputs, prompt.parameters or {}, message_id=prompt.message_id, is_retry=prompt.is_retry
        )

    def settings_body(self, model: str) -> Any:
        return settings_form(model)


FAMILY = _V04(
    name="0.4", releases="v0.3-v0.6", stream="sse", settings="form", multipart=False, tree=False, preprompt=False,
    read_back="page", models=None, superjson=False, ends=True, stop_ends_reply=True,
)
