"""chat-ui's wire contract, one module per family, as pure functions and data; no I/O.

``_common`` is what every family shares; ``v0_4`` ... ``v0_10`` each make one
:class:`~._family.Family`; ``_updates`` reads chat-ui's JSON-lines updates
(``"0.7"`` on), ``_readback`` what the server stored, ``_detect`` which family a
server speaks. Adding a family is one module and one line in :data:`FAMILIES`.
"""

from __future__ import annotations

from . import v0_4, v0_7, v0_8, v0_9, v0_10
from ._common import (
    CONVERSATION_PATH,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    SETTINGS_PATH,
    Messages,
    check_text,
    conversation_path,
    create_payload,
    format_prompt,
    parse_conversation_id,
    split_system,
    stop_generating_path,
)
from ._family import Attachment, Family, Prompt, multipart_body
from .v0_4 import (
    DEFAULT_PARAMETERS,
    TGI_PARAMETERS,
    check_parameter_values,
    check_parameters,
    parse_event,
    prompt_payload,
    reply_fields,
    settings_form,
)

__all__ = [
    "Attachment", "CONVERSATION_PATH", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "DEFAULT_PARAMETERS", "FAMILIES",
    "PROTOCOLS", "SETTINGS_PATH", "TGI_PARAMETERS", "Family", "Messages", "Prompt", "check_parameter_values",
    "check_parameters",
    "check_protocol", "check_text", "conversation_path", "create_payload", "format_prompt", "multipart_body",
    "parse_conversation_id", "parse_event", "prompt_payload", "reply_fields", "settings_form", "split_system",
    "stop_generating_path",
]

#: Every family, oldest first, by the name ``protocol=`` takes.
FAMILIES: dict[str, Family] = {f.name: f for f in (v0_4.FAMILY, v0_7.FAMILY, v0_8.FAMILY, v0_9.FAMILY, v0_10.FAMILY)}

#: What ``protocol=`` accepts.
PROTOCOLS = ("auto", *FAMILIES)


def check_protocol(protocol: object) -> str:
    """``protocol`` if it is ``"auto"`` or a family's name.

    Raises:
        TypeError, ValueError: Anything else.
    """
    if not isinstance(protocol, str):
        raise TypeError(f"protocol must be a str, not {type(protocol).__name__}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(map(repr, PROTOCOLS))}, not {protocol!r}")
    return protocol
