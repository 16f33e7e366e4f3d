"""The gateway's ASGI application: OpenAI's chat-completions API over an :class:`AsyncClient`.

Every request goes through the SDK like any other caller's: one client (one
server session, the family detected once) for the gateway's life. The
gateway adds only what the OpenAI API asks for: its shapes and status codes
(``_openai``), ``stop`` and ``max_tokens`` cut on this side, and a memory of
the conversations it answered, so a follow-up request that repeats them with
one new message continues the server's conversation instead of starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import (
    APIConnectionError,
    APIStatusError,
    AsyncClient,
    AsyncConversation,
    AsyncStream,
    AuthenticationError,
    GenerationError,
    H2oError,
    NotFoundError,
    RateLimitError,
    UnsupportedError,
    format_prompt,
)
from . import _openai
from ._openai import ChatRequest, GatewayError

__all__ = ["create_app"]

logger = logging.getLogger("h2o_sdk.gateway")

#: chat-ui counts messages per minute (USAGE_LIMITS.messagesPerMinute) and says no more.
_RATE_WINDOW = 60


def create_app(
    client_or_url: AsyncClient | str,
    *,
    api_key: str | None = None,
    lenient: bool = False,
    keep_conversations: bool = False,
    idle: float = 600.0,
    max_queue: int = 256,
    **client_options: Any,
) -> Starlette:
    """An OpenAI-compatible ASGI application in front of a chat-ui server.

    Example::

        app = create_app("http://127.0.0.1:8080")
        uvicorn.run(app, host="127.0.0.1", port=8000)

    Args:
        client_or_url: An :class:`AsyncClient` (the gateway closes it at
            shutdown) or the chat-ui server's URL.
        api_key: Requests must carry ``Authorization: Bearer <api_key>``
            (``None``: no check; bind loopback only then).
        lenient: Leave out sampling parameters the server's family cannot
            take, and say so in an ``x-h2o-ignored-parameters`` header,
            instead of a 400.
        keep_conversations: Never delete the conversations it made.
        idle: Seconds after which a conversation the gateway made and nobody
            continued is deleted (all of them at shutdown).
        max_queue: Requests that may wait for a free stream slot beyond the
            client's ``max_concurrency``; more get 503.
        **client_options: :class:`AsyncClient` options, with a URL.

    Returns:
        The Starlette application.
    """
    client = client_or_url if isinstance(client_or_url, AsyncClient) else AsyncClient(client_or_url, **client_options)
    gateway = _Gateway(client, api_key=api_key, lenient=lenient, keep=keep_conversations, idle=idle,
                       max_queue=max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(gateway.sweep)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await gateway.close()

    routes = [
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/v1/models/{model:path}", gateway.model, methods=["GET"]),
        Route("/v1/chat/completions", gateway.chat, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app


@dataclass
class _Kept:
    """A conversation the gateway made, waiting to be continued."""

    conversation: AsyncConversation
    used: float = field(default_factory=time.monotonic)


def _key(model: str, system: str | None, turns: Sequence[Mapping[str, str]]) -> str:
    text = json.dumps([model, system, [[t["role"], t["content"]] for t in turns]], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class _Gateway:
    def __init__(self, client: AsyncClient, *, api_key: str | None, lenient: bool, keep: bool, idle: float,
                 max_queue: int) -> None:
        self.client = client
        self.api_key = api_key
        self.lenient = lenient
        self.keep = keep
        self.idle = idle
        self.capacity = client.max_concurrency + max_queue
        self.inflight = 0
        # The messages a follow-up would repeat -> the conversations that hold them (the same
        # question asked twice makes two).
        self.kept: dict[str, list[_Kept]] = {}
        self.turns: set[_Turn] = set()  # under way; closed at shutdown if a response never ran

    # -- housekeeping -------------------------------------------------------------

    async def sweep(self) -> None:
        """Delete conversations nobody continued within ``idle`` seconds."""
        while True:
            await anyio.sleep(min(self.idle, 30.0))
            now = time.monotonic()
            for key, items in list(self.kept.items()):
                stale = [item for item in items if now - item.used >= self.idle]
                items[:] = [item for item in items if item not in stale]
                if not items:
                    self.kept.pop(key, None)
                for item in stale:
                    await self._drop(item.conversation)

    async def close(self) -> None:
        for turn in list(self.turns):
            await turn._close(keep=False)
        kept, self.kept = [item for items in self.kept.values() for item in items], {}
        for item in kept:
            await self._drop(item.conversation)
        await self.client.aclose()

    async def _drop(self, conversation: AsyncConversation) -> None:
        if self.keep:
            return
        try:
            await conversation.delete()
        except H2oError as exc:
            logger.warning("could not delete conversation %s: %s", conversation.id, exc)

    # -- requests ------------------------------------------------------------------

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise GatewayError(401, "Incorrect API key provided", code="invalid_api_key")

    async def models(self, request: Request) -> Response:
        try:
            self._check_key(request)
            ids = await self._model_ids()
        except GatewayError as exc:
            return _error(exc)
        return JSONResponse({"object": "list", "data": [_model(i) for i in ids]})

    async def model(self, request: Request) -> Response:
        try:
            self._check_key(request)
            wanted = request.path_params["model"]
            if wanted not in await self._model_ids():
                raise GatewayError(404, f"The model `{wanted}` does not exist", param="model",
                                   code="model_not_found")
        except GatewayError as exc:
            return _error(exc)
        return JSONResponse(_model(wanted))

    async def _model_ids(self) -> list[str]:
        try:
            return list(await self.client.models())
        except UnsupportedError:
            return [self.client.model]  # 0.4 and 0.7 list none: the configured one
        except H2oError as exc:
            raise _upstream(exc) from exc

    async def chat(self, request: Request) -> Response:
        if self.inflight >= self.capacity:
            return _error(GatewayError(503, "the gateway is busy; try again shortly", type="server_error",
                                       headers={"retry-after": "1"}))
        self.inflight += 1
        turns: list[_Turn] = []  # once the request has a turn, the turn's close frees its place
        try:
            self._check_key(request)
            try:
                body = await request.json()
            except ValueError:
                raise GatewayError(400, "the request body is not JSON") from None
            chat = _openai.parse_request(body)
            return await self._answer(chat, turns)
        except GatewayError as exc:
            if not turns:
                self.inflight -= 1
            return _error(exc)
        except BaseException:
            if not turns:
                self.inflight -= 1
            raise

    async def _answer(self, chat: ChatRequest, turns: list[_Turn]) -> Response:
        model = chat.model or self.client.model
        try:
            # Known after the first request: no worker thread for it on every request.
            protocol = self.client.protocol or await self.client.detect_protocol()
        except H2oError as exc:
            raise _upstream(exc) from exc
        if chat.model is not None:
            ids = await self._model_ids()
            if model not in ids:
                raise GatewayError(404, f"The model `{model}` does not exist", param="model", code="model_not_found")
        parameters, ignored = self._parameters(chat, protocol)
        conversation, text = self._conversation(chat, model)
        stream = conversation.stream(text, **parameters)
        turn = _Turn(self, chat, model, conversation, stream)
        self.turns.add(turn)
        turns.append(turn)
        await turn.start()  # the status waits for the server's first event
        headers = {"x-h2o-ignored-parameters": ", ".join(ignored)} if ignored else None
        if chat.stream:
            return StreamingResponse(turn.events(), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", **(headers or {})})
        return JSONResponse(await turn.whole(), headers=headers)

    def _parameters(self, chat: ChatRequest, protocol: str | None) -> tuple[dict[str, Any], list[str]]:
        """The SDK's generation parameters; sampling goes to 0.4 only (a 400, or ignored when lenient)."""
        parameters: dict[str, Any] = {}
        ignored: list[str] = []
        for name, value in chat.sampling.items():
            tgi = _openai.TGI.get(name)
            if protocol == "0.4" and tgi is not None:
                if name == "temperature" and value == 0:
                    continue  # greedy: TGI takes no temperature of 0
                parameters[tgi] = value
            elif self.lenient:
                ignored.append(name)
            else:
                where = "TGI has no such parameter" if protocol == "0.4" else (
                    f"chat-ui protocol {protocol} takes no sampling parameters: its model configuration decides")
                raise GatewayError(400, f"{name} is not supported here: {where}", param=name,
                                   code="unsupported_parameter")
        if protocol == "0.4":
            parameters["details"] = True  # generated_tokens, for usage
            if chat.max_tokens is not None:
                parameters["max_new_tokens"] = chat.max_tokens
        return parameters, ignored

    def _conversation(self, chat: ChatRequest, model: str) -> tuple[AsyncConversation, str]:
        """The server conversation to answer in, and the text to send.

        A request that repeats an answered one (its messages and the reply) with one new user
        message continues that conversation: only the new message goes, and the server builds
        the prompt as the web UI would. Otherwise a new conversation starts, the earlier turns
        flattened into its first message as the seed's prompt format did.
        """
        last = chat.turns[-1]["content"]
        items = self.kept.get(_key(model, chat.system, chat.turns[:-1])) if len(chat.turns) > 1 else None
        if items:
            return items.pop().conversation, last
        text = last if len(chat.turns) == 1 else format_prompt(chat.turns)
        return self.client.conversation(model=model, keep=True, system_prompt=chat.system), text

    def remember(self, chat: ChatRequest, model: str, conversation: AsyncConversation, reply: str) -> None:
        turns = [*chat.turns, {"role": "assistant", "content": reply}]
        self.kept.setdefault(_key(model, chat.system, turns), []).append(_Kept(conversation))


class _Turn:
    """One completion: the SDK stream, ``stop`` and ``max_tokens`` applied, in OpenAI's shapes."""

    def __init__(self, gateway: _Gateway, chat: ChatRequest, model: str, conversation: AsyncConversation,
                 stream: AsyncStream) -> None:
        self.gateway, self.chat, self.model, self.conversation, self.stream = gateway, chat, model, conversation, stream
        self.ident, self.created = _openai.new_id()
        self.first: str | None = None
        self.pieces = 0
        self.text = ""  # what went to the client
        self.held = ""  # text that may be the start of a stop sequence
        self.finish: str | None = None
        self.done = False

    async def start(self) -> None:
        """Wait for the first piece of the reply: a refusal is still an HTTP status then."""
        async with self._closed_on_failure():
            try:
                self.first = await self.stream.__anext__()
            except StopAsyncIteration:
                self.first = ""
                self.done = True

    @contextlib.asynccontextmanager
    async def _closed_on_failure(self) -> AsyncIterator[None]:
        """A failure ends the turn (its conversation deleted); the SDK's error as OpenAI's."""
        try:
            yield
        except H2oError as exc:
            await self._close(keep=False)
            raise _upstream(exc) from exc
        except BaseException:
            await self._close(keep=False)
            raise

    def _take(self, piece: str) -> str:
        """Text to send for ``piece``; sets :attr:`finish` when a stop sequence or the limit ends the reply."""
        self.pieces += 1
        pending = self.held + piece
        self.held = ""
        cut = min((i for i in (pending.find(s) for s in self.chat.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finish = "stop"
            return pending[:cut]
        keep = max((len(s) - 1 for s in self.chat.stop), default=0)
        for size in range(min(keep, len(pending)), 0, -1):
            if any(s.startswith(pending[-size:]) for s in self.chat.stop):
                self.held = pending[-size:]
                pending = pending[:-size]
                break
        if self.chat.max_tokens is not None and self.pieces >= self.chat.max_tokens:
            self.finish = "length"
        return pending

    async def _pieces(self) -> AsyncIterator[str]:
        """The reply's text pieces to send, until it ends one way or another."""
        if self.first is not None and not self.done:
            out = self._take(self.first)
            if out:
                yield out
        while self.finish is None and not self.done:
            try:
                piece = await self.stream.__anext__()
            except StopAsyncIteration:
                self.done = True
                break
            out = self._take(piece)
            if out:
                yield out
        if self.finish is None:
            if self.held:
                yield self.held
                self.held = ""
            reply = self.stream.reply
            cut_short = reply is not None and (reply.finish_reason == "length" or reply.interrupted is True)
            self.finish = "length" if cut_short else "stop"

    def _tokens(self) -> int | None:
        reply = self.stream.reply
        # Only 0.4 reports generated tokens; never counted pieces (0.8 re-chunks its text).
        return reply.generated_tokens if reply is not None and self.done else None

    def _extra(self) -> dict[str, Any] | None:
        reply = self.stream.reply
        if reply is not None and reply.sources:
            return {"x_h2o_sources": [dict(s) for s in reply.sources]}  # web pages; clients ignore it
        return None

    async def events(self) -> AsyncIterator[bytes]:
        """The streamed answer: role, text deltas, the finish, usage if asked, ``[DONE]``."""
        try:
            yield _openai.sse(_openai.chunk(self.ident, self.created, self.model, {"role": "assistant", "content": ""}))
            try:
                async for text in self._pieces():
                    self.text += text
                    yield _openai.sse(_openai.chunk(self.ident, self.created, self.model, {"content": text}))
            except H2oError as exc:
                error = _upstream(exc)
                yield _openai.sse(error.body())  # the official client raises APIError; never a bare cut
                return
            yield _openai.sse(_openai.chunk(self.ident, self.created, self.model, {}, self.finish, self._extra()))
            if self.chat.include_usage:
                usage = {"id": self.ident, "object": "chat.completion.chunk", "created": self.created,
                         "model": self.model, "system_fingerprint": None, "choices": [],
                         "usage": _openai.usage(self._tokens())}
                yield _openai.sse(usage)
            yield _openai.sse("[DONE]")
        finally:
            with anyio.CancelScope(shield=True):
                await self._close(keep=self.done)

    async def whole(self) -> dict[str, Any]:
        async with self._closed_on_failure():
            async for text in self._pieces():
                self.text += text
        await self._close(keep=self.done)
        return _openai.completion(self.ident, self.created, self.model, self.text, self.finish or "stop",
                                  self._tokens(), self._extra())

    async def _close(self, *, keep: bool) -> None:
        """End the SDK stream (a stop where it was cut); remember a finished conversation, else delete it."""
        if self not in self.gateway.turns:
            return  # closed already
        self.gateway.turns.discard(self)
        self.gateway.inflight -= 1  # its place is free
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()
            reply = self.stream.reply
            if keep and reply is not None and self.finish == "stop" and not self.held:
                self.gateway.remember(self.chat, self.model, self.conversation, self.text)
            else:
                await self.gateway._drop(self.conversation)


def _model(ident: str) -> dict[str, Any]:
    return {"id": ident, "object": "model", "created": 0, "owned_by": "chat-ui"}


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def _upstream(exc: H2oError) -> GatewayError:
    """An SDK error as OpenAI's: the server's refusal keeps its meaning; a broken server is a 502."""
    message = str(exc)
    if isinstance(exc, AuthenticationError):
        return GatewayError(401, message, type="authentication_error", code="login_required")
    if isinstance(exc, NotFoundError):
        return GatewayError(404, message, type="not_found_error")
    if isinstance(exc, RateLimitError):
        after = exc.headers.get("retry-after") if exc.headers else None
        return GatewayError(429, message, type="rate_limit_error", code="rate_limit_exceeded",
                            headers={"retry-after": after or str(_RATE_WINDOW)})
    if isinstance(exc, UnsupportedError):
        return GatewayError(400, message, code="unsupported")
    if isinstance(exc, GenerationError):
        status = exc.status_code
        if status == 429:
            return GatewayError(429, message, type="rate_limit_error", headers={"retry-after": str(_RATE_WINDOW)})
        return GatewayError(502, message, type="server_error", code="generation_failed")
    if isinstance(exc, APIStatusError):
        if 400 <= exc.status_code < 500:
            return GatewayError(400 if exc.status_code in (400, 413, 422) else exc.status_code, message,
                                code=f"upstream_{exc.status_code}")
        return GatewayError(502, message, type="server_error", code=f"upstream_{exc.status_code}")
    if isinstance(exc, APIConnectionError):
        return GatewayError(503, message, type="server_error", code="upstream_unreachable")
    return GatewayError(502, message, type="server_error")
