"""Plain frozen values the SDK hands out: :class:`Token`, :class:`Reply`, :class:`Timeout`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "Reply", "Timeout", "Token"]

#: The longest timeout accepted, in seconds (a day); sockets and sleeps refuse far larger values.
MAX_TIMEOUT = 86400.0


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token, as the server streamed it.

    Attributes:
        id: The model's token id (``None`` from chat-ui 0.7 on, which sends text only).
        text: The token's text; may be ``""`` for a token that only completes
            part of a multi-byte character.
        logprob: The token's log-probability, when the server sent one.
        special: ``True`` for special tokens such as the final ``<|endoftext|>``;
            their text is not part of the reply.
    """

    id: int | None
    text: str
    logprob: float | None = None
    special: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Token:
        """Build a token from TGI's ``token`` object; unknown keys are ignored.

        Raises:
            KeyError: ``id`` or ``text`` is missing.
        """
        return cls(data["id"], data["text"], data.get("logprob"), bool(data.get("special", False)))


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished reply. ``str(reply)`` is its text.

    Attributes:
        text: The whole reply, as the server's ``generated_text`` (special
            tokens excluded; stop sequences included, as TGI sends them), or
            from chat-ui 0.7 on its ``finalAnswer`` text (which can differ
            from the joined tokens: 0.10 re-sends tokens after an upstream
            failover).
        finish_reason: ``"eos_token"``, ``"length"`` or ``"stop_sequence"``;
            ``None`` when the server sent no details (ask with ``details=True``).
        generated_tokens: How many tokens were generated, or ``None`` without details.
        seed: The sampling seed the server reported, or ``None``.
        tokens: Every token received, the final special one included.
        conversation_id: The server conversation that produced the reply.
        title: The conversation's title, when the server sent one with the
            reply (chat-ui 0.7 on), else ``None``.
        interrupted: chat-ui 0.9 on: ``True`` when generation did not end on
            its own (stopped, or the token limit); ``None`` when not said.
        sources: The web pages the server's web search used
            (``web_search=True``), as ``{"title", "url"}`` dicts, and the
            ``webSources`` of a grounded model (0.9.3 on); empty when there
            were none, as after a search that failed on the server.
    """

    text: str
    finish_reason: str | None = None
    generated_tokens: int | None = None
    seed: int | None = None
    tokens: tuple[Token, ...] = field(default=(), repr=False)
    conversation_id: str | None = None
    title: str | None = None
    interrupted: bool | None = None
    sources: tuple[Mapping[str, str], ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A conversation of the session, as the server lists it (:meth:`Client.conversations`).

    Attributes:
        id: The server conversation's id (open it with ``client.conversation(id=...)``).
        title: Its title.
        model: The model it uses, where the listing says (``None`` otherwise).
        updated_at: When it last changed, as the server's ISO 8601 text, where
            the listing says (``None`` in 0.4, whose page data lists none).
    """

    id: str
    title: str
    model: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True, slots=True)
class Timeout:
    """How long the client waits.

    Attributes:
        connect: Seconds to wait for a connection to open.
        read: Seconds to wait between two bytes of an answer (an idle timeout,
            not a limit on the whole reply).
        cleanup: The deadline for the whole cleanup of a stream, in seconds:
            stop-generating, reading what the server sends until it stops,
            and the delete together, retries included.

    A bare number passed as ``timeout=`` sets ``connect`` and ``read``. Every
    value must be a finite number of seconds, above 0 and at most a day.
    """

    connect: float = 10.0
    read: float = 60.0
    cleanup: float = 5.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "cleanup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Timeout.{name} must be a number of seconds, not {value!r}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Timeout.{name} must be a positive, finite number of seconds, not {value!r}")
            if value > MAX_TIMEOUT:
                raise ValueError(f"Timeout.{name} must be at most {MAX_TIMEOUT:g} seconds (a day), not {value!r}")

    @classmethod
    def coerce(cls, value: Timeout | float | tuple[float, float]) -> Timeout:
        """Accept a :class:`Timeout`, a number, or a ``(connect, read)`` pair."""
        if isinstance(value, Timeout):
            return value
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"timeout pair must be (connect, read), not {value!r}")
            return cls(connect=value[0], read=value[1])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"timeout must be a number, a (connect, read) pair or a Timeout, not {value!r}")
        return cls(connect=value, read=value)


#: The default: connect within 10 s, no more than 60 s of silence, 5 s for a stream's whole cleanup.
DEFAULT_TIMEOUT = Timeout()
