"""Show a reply live in a Jupyter cell (install the ``notebook`` extra).

Example::

    from h2o_sdk import Client, notebook

    client = Client()
    reply = notebook.show(client, "Write a haiku about rivers")          # blocking
    reply = await notebook.show(async_client, "Write a haiku about rivers")  # AsyncClient

The reply is rendered as Markdown in one display area that is updated in
place (at most every ``interval`` seconds, so a fast stream does not flood
the front end) and ends with the full reply. Outside IPython the text is
printed as it arrives instead. IPython is imported only when this is used.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, overload

from ._client import Client
from ._exceptions import IncompleteStreamError
from ._protocol import Messages
from ._types import Reply

if TYPE_CHECKING:
    from ._async_client import AsyncClient

__all__ = ["show"]


@overload
def show(client: Client, messages: Messages, *, interval: float = ..., **parameters: Any) -> Reply: ...


@overload
def show(client: AsyncClient, messages: Messages, *, interval: float = ..., **parameters: Any) -> Awaitable[Reply]: ...


def show(client: Client | AsyncClient, messages: Messages, *, interval: float = 0.1,
         **parameters: Any) -> Reply | Awaitable[Reply]:
    """Stream a reply into the current cell's output and return it.

    Args:
        client: A :class:`Client`, or an :class:`AsyncClient` (then ``await`` the result).
        messages: As :meth:`Client.stream` takes them.
        interval: The least time between two updates of the display, in seconds.
        **parameters: Generation parameters.

    Returns:
        The :class:`Reply` (an awaitable of it for an ``AsyncClient``).

    Raises:
        TypeError: ``client`` is neither a :class:`Client` nor an :class:`AsyncClient`.
        H2oError: As :class:`Stream` documents; the display keeps the text so far.
    """
    if isinstance(client, Client):
        live = _Live(interval)
        with client.stream(messages, keep_tokens=True, **parameters) as stream:
            try:
                for text in stream:
                    live.add(text)
            except BaseException:
                live.flush(stream.text)  # the cell keeps what arrived
                raise
        return live.end(stream.reply, stream.text)
    from ._async_client import AsyncClient

    if not isinstance(client, AsyncClient):
        raise TypeError(f"show() takes a Client or an AsyncClient, not {type(client).__name__}")
    return _show_async(client, messages, interval, parameters)


async def _show_async(client: AsyncClient, messages: Messages, interval: float, parameters: dict[str, Any]) -> Reply:
    live = _Live(interval)
    async with client.stream(messages, keep_tokens=True, **parameters) as stream:
        try:
            async for text in stream:
                live.add(text)
        except BaseException:
            live.flush(stream.text)  # the cell keeps what arrived
            raise
    return live.end(stream.reply, stream.text)


class _Live:
    """One Markdown display updated in place, or plain text outside IPython."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._parts: list[str] = []
        self._last = 0.0
        self._handle: Any = None
        self._markdown: Any = None
        ipython = sys.modules.get("IPython")
        if ipython is not None and ipython.get_ipython() is not None:
            # Only inside IPython, which has then imported itself already.
            shown: Any = importlib.import_module("IPython.display")
            self._markdown = shown.Markdown
            self._handle = shown.display(shown.Markdown(""), display_id=True)

    def add(self, text: str) -> None:
        if self._handle is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        self._parts.append(text)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._handle.update(self._markdown("".join(self._parts)))

    def flush(self, text: str) -> None:
        if self._handle is not None:
            self._handle.update(self._markdown(text))

    def end(self, reply: Reply | None, text: str) -> Reply:
        if self._handle is None:
            sys.stdout.write("\n")
        else:
            self._handle.update(self._markdown(reply.text if reply is not None else text))
        if reply is None:  # unreachable: a stream only ends quietly with its reply
            raise IncompleteStreamError("the stream ended without a reply", text=text)
        return reply
