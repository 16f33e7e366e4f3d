"""A fast fake chat service for benchmarks, run in its own process.

It answers the chat-ui flow with pre-rendered TGI bytes (one event per chunk)
so that the server is never the bottleneck. Each token's text carries the
server's ``time.monotonic_ns()`` at the moment it was written (the clock is
shared by processes on one machine), so the client can measure latency.

    python -m benchmarks._server --tokens 1000 --pace 0.01 [--close-delimited] [--tls CERT_AND_KEY.pem]
                                 [--first-token-delay SECONDS]
                                 [--family 0.4|0.7|0.8|0.9|0.10]

``--family`` answers as that chat-ui family: its detection probes, its
read-back of a new conversation's root, and its stream (chat-ui's JSON-lines
updates from 0.7 on, NUL-padded tokens from 0.9, ``finished`` in 0.10).

prints ``port N`` once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import time

MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"
_GET_NOT_ALLOWED = b"GET method not allowed"
_NOT_FOUND_PAGE = (b'<!DOCTYPE html><html><head><link href="../../_app/immutable/assets/0.css" rel="stylesheet">'
                   b'</head><body><h1>404</h1><script>__sveltekit_x = {base: new URL("../..", location)'
                   b'.pathname.slice(0, -1)};</script></body></html>')
_COOKIE = b"set-cookie: hf-chat=bench; Path=/; HttpOnly; SameSite=Lax\r\n"


def _event(tid: int, text: str, final: str | None = None) -> bytes:
    obj = {"token": {"id": tid, "text": text, "logprob": -0.1, "special": final is not None},
           "generated_text": final, "details": None}
    return b"data:" + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_ROOT = "00000000-0000-4000-8000-000000000000"
_STREAM_TYPES = {"0.4": b"text/event-stream", "0.7": b"", "0.8": b"text/event-stream", "0.9": b"text/event-stream",
                 "0.10": b"application/jsonl"}


def _update(update: dict[str, object]) -> bytes:
    return json.dumps(update, separators=(",", ":")).encode() + b"\n"


class Bench:
    def __init__(self, tokens: int, pace: float, close_delimited: bool, stall: bool, family: str = "0.4") -> None:
        self.family = family
        self.tokens = tokens
        self.pace = pace
        self.first_token_delay = 0.0
        self.close_delimited = close_delimited
        self.stall = stall
        text = " tok"
        self.burst_events = [_event(1000 + i % 5000, text) for i in range(tokens)]
        # The last event's generated_text is kept short: repeating 200k tokens would
        # exceed aiohttp's 512 KiB line limit, and the seed's way could not run.
        self.final = _event(11, "<|endoftext|>", final=f"({tokens} tokens)")
        if family != "0.4":
            token = text + "\u0000" * (16 - len(text)) if family in ("0.9", "0.10") else text
            self.burst_events = [_update({"type": "stream", "token": token}) for _ in range(tokens)]
            final = _update({"type": "finalAnswer", "text": f"({tokens} tokens)", "interrupted": False})
            self.final = final + b" " * 4096 + (_update({"type": "status", "status": "finished"})
                                                if family == "0.10" else b"")

    def answer(self, method: str, path: str) -> tuple[int, bytes]:
        """A status and JSON body for everything but the prompt."""
        parts = [p for p in path.split("/") if p]
        family = self.family
        if method == "GET":
            if parts == ["api", "v2", "feature-flags"] and family == "0.10":
                return 200, b'{"json":{"loginEnabled":false}}'
            if parts == ["api", "models"] and family in ("0.8", "0.9"):
                return 200, json.dumps([{"id": MODEL, **({"tools": False} if family == "0.9" else {})}]).encode()
            if parts == ["api", "v2", "models"] and family == "0.10":
                return 200, json.dumps({"json": [{"id": MODEL}]}).encode()
            if parts[-1:] == ["summarize"]:
                # As the real releases answer detection's probe (SvelteKit's 405, or its 404 page).
                return (405, _GET_NOT_ALLOWED) if family == "0.4" else (404, _NOT_FOUND_PAGE)
            if parts[:2] == ["api", "v2"] and len(parts) == 4:
                return 200, json.dumps({"json": {"messages": [{"id": _ROOT, "from": "system", "content": "",
                                                               "ancestors": []}]}}).encode()
            if parts[-1:] == ["__data.json"]:
                page = [{"messages": 1}, [2], {"id": 3, "from": 4, "content": 5, "ancestors": 6}, _ROOT, "system", "",
                        []]
                return 200, json.dumps({"type": "data", "nodes": [{"type": "data", "data": [{}]},
                                                                  {"type": "data", "data": page}]}).encode()
            return 404, b""
        if parts == ["conversation"] and method == "POST":
            return 200, json.dumps({"conversationId": secrets.token_hex(12)}).encode()
        if parts == ["settings"]:
            return 200, (b'{"type":"redirect","status":303,"location":"/"}' if family == "0.4" else b"")
        return 200, b""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                if length:
                    await reader.readexactly(length)
                parts = [p for p in path.split("/") if p]
                if method == "POST" and len(parts) == 2:
                    if not await self.stream(writer):
                        return
                    continue
                status, body = self.answer(method, path)
                kind = b"content-type: application/json\r\n" if body else b""
                if body is _GET_NOT_ALLOWED:
                    kind = b"content-type: text/plain;charset=UTF-8\r\nallow: POST\r\n"
                elif body is _NOT_FOUND_PAGE:
                    kind = b"content-type: text/html\r\nx-sveltekit-page: true\r\n"
                length_line = b"content-length: %d\r\n\r\n" % len(body)
                writer.write(b"HTTP/1.1 %d X\r\n" % status + kind + _COOKIE + length_line + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stream(self, writer: asyncio.StreamWriter) -> bool:
        """Write one reply; ``False`` when the connection must close afterwards."""
        framing = b"connection: close\r\n" if self.close_delimited else b"transfer-encoding: chunked\r\n"
        kind = _STREAM_TYPES[self.family]
        writer.write(b"HTTP/1.1 200 OK\r\n" + (b"content-type: " + kind + b"\r\n" if kind else b"")
                     + b"cache-control: no-cache\r\n" + _COOKIE + framing + b"\r\n")
        wrap = (lambda data: data) if self.close_delimited else _chunk
        if self.stall:
            writer.write(wrap(_event(1000, "first")))
            await writer.drain()
            await asyncio.sleep(3600)
        if self.first_token_delay:
            await writer.drain()
            await asyncio.sleep(self.first_token_delay)  # a model's time to its first token
        if self.pace <= 0:
            writer.write(b"".join(wrap(e) for e in self.burst_events))
        else:
            for i in range(self.tokens):
                writer.write(wrap(_event(1000 + i % 5000, f" {time.monotonic_ns()}")))
                await writer.drain()
                await asyncio.sleep(self.pace)
        writer.write(wrap(self.final))
        if self.close_delimited:
            await writer.drain()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--close-delimited", action="store_true")
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--tls", metavar="PEM", help="serve https with this certificate and key")
    parser.add_argument("--family", default="0.4", choices=("0.4", "0.7", "0.8", "0.9", "0.10"))
    options = parser.parse_args()
    bench = Bench(options.tokens, options.pace, options.close_delimited, options.stall, options.family)
    bench.first_token_delay = options.first_token_delay
    context = None
    if options.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.tls)
    server = await asyncio.start_server(bench.handle, "127.0.0.1", 0, backlog=4096, ssl=context)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
