"""``H2o``: the seed document's provider class, kept usable as it was documented."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from ._async_client import AsyncClient
from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL

__all__ = ["H2o"]


class H2o:
    """The original async provider, now running on :class:`AsyncClient`.

    Example::

        async for token in H2o.create_async_generator("", [{"role": "user", "content": "Hi"}]):
            print(token, end="")

    Subclass it and set ``url`` to talk to another server. Errors are the
    SDK's (:class:`H2oError` and its subclasses).
    """

    url = DEFAULT_BASE_URL
    model = DEFAULT_MODEL
    working = True
    supports_stream = True

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: str | Sequence[Mapping[str, str]],
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str, None]:
        """Stream the reply to ``messages`` as ``str`` tokens.

        Args:
            model: The model id; empty for ``cls.model``.
            messages: ``{"role", "content"}`` mappings (or one string).
            proxy: A proxy URL for every request.
            **kwargs: Generation parameters, merged over the defaults.
        """
        client = AsyncClient(cls.url, model=model or cls.model, proxy=proxy, max_concurrency=1)
        async with client, client.stream(messages, **kwargs) as stream:
            async for token in stream:
                yield token
