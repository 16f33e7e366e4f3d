"""A fast fake chat service for benchmarks, run in its own process.

It answers the chat-ui flow with pre-rendered TGI bytes (one event per chunk)
so that the server is never the bottleneck. Each token's text carries the
server's ``time.monotonic_ns()`` at the moment it was written (the clock is
shared by processes on one machine), so the client can measure latency.

    python -m benchmarks._server --tokens 1000 --pace 0.01 [--close-delimited] [--tls CERT_AND_KEY.pem]

prints ``port N`` once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import time

_COOKIE = b"set-cookie: hf-chat=bench; Path=/; HttpOnly; SameSite=Lax\r\n"


def _event(tid: int, text: str, final: str | None = None) -> bytes:
    obj = {"token": {"id": tid, "text": text, "logprob": -0.1, "special": final is not None},
           "generated_text": final, "details": None}
    return b"data:" + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Bench:
    def __init__(self, tokens: int, pace: float, close_delimited: bool, stall: bool) -> None:
        self.tokens = tokens
        self.pace = pace
        self.close_delimited = close_delimited
        self.stall = stall
        text = " tok"
        self.burst_events = [_event(1000 + i % 5000, text) for i in range(tokens)]
        # The last event's generated_text is kept short: repeating 200k tokens would
        # exceed aiohttp's 512 KiB line limit, and the seed's way could not run.
        self.final = _event(11, "<|endoftext|>", final=f"({tokens} tokens)")

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
                if parts == ["conversation"] and method == "POST":
                    body = json.dumps({"conversationId": secrets.token_hex(12)}).encode()
                elif parts == ["settings"]:
                    body = b'{"type":"redirect","status":303,"location":"/"}'
                else:
                    body = b""
                kind = b"content-type: application/json\r\n" if body else b""
                length_line = b"content-length: %d\r\n\r\n" % len(body)
                writer.write(b"HTTP/1.1 200 OK\r\n" + kind + _COOKIE + length_line + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stream(self, writer: asyncio.StreamWriter) -> bool:
        """Write one reply; ``False`` when the connection must close afterwards."""
        framing = b"connection: close\r\n" if self.close_delimited else b"transfer-encoding: chunked\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     + _COOKIE + framing + b"\r\n")
        wrap = (lambda data: data) if self.close_delimited else _chunk
        if self.stall:
            writer.write(wrap(_event(1000, "first")))
            await writer.drain()
            await asyncio.sleep(3600)
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
    parser.add_argument("--close-delimited", action="store_true")
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--tls", metavar="PEM", help="serve https with this certificate and key")
    options = parser.parse_args()
    bench = Bench(options.tokens, options.pace, options.close_delimited, options.stall)
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
