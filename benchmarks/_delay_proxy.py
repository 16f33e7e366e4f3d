"""A TLS front with a network's delays, for the benchmarks' network figure; loopback only.

    python -m benchmarks._delay_proxy --rtt 0.1 --upstream PORT --pem SERVER.pem

prints ``port N`` once it listens on 127.0.0.1. Bytes from a client reach the
TLS engine RTT/2 after they were sent, and the engine's bytes reach the client
RTT/2 after it wrote them; a new connection's first bytes wait one RTT more,
the TCP handshake a real network charges. The engine terminates TLS (1.3,
with a throwaway certificate) and passes plain HTTP to the upstream server,
as a load balancer next to the service would: the upstream side has no delay.

A line ``stats`` on standard input is answered with one JSON line
``{"connections": N, "requests": M}`` (counted since the last ``stats``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import sys

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(?:GET|POST|DELETE|PATCH|PUT|HEAD) /\S* HTTP/1\.1\r\n")


class Stats:
    connections = 0
    requests = 0


class Link:
    """One client connection: delayed raw bytes on the client side, TLS in a memory BIO, plain upstream."""

    def __init__(self, rtt: float, context: ssl.SSLContext, client: asyncio.StreamWriter,
                 upstream: asyncio.StreamWriter) -> None:
        self.loop = asyncio.get_running_loop()
        self.half = rtt / 2
        self.ready_at = self.loop.time() + rtt  # the TCP handshake
        self.client, self.upstream = client, upstream
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False
        self.last_in = self.last_out = 0.0
        self.closed = False

    # client -> engine ---------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        # In order, and each byte RTT/2 after it was sent (after the handshake's RTT, for the first).
        at = max(max(self.loop.time(), self.ready_at) + self.half, self.last_in)
        self.last_in = at
        self.loop.call_at(at, self._arrive, data)

    def _arrive(self, data: bytes) -> None:
        if self.closed:
            return
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        plain = bytearray()
        ended = False
        try:
            if not self.handshaken:
                self.tls.do_handshake()
                self.handshaken = True
            while True:
                plain += self.tls.read(65536)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            ended = True
        except ssl.SSLError:
            self.close()
            return
        self._flush()
        if plain:
            Stats.requests += len(_REQUEST_LINE.findall(bytes(plain)))
            self.upstream.write(bytes(plain))
        if ended:
            self.close()

    # engine -> client ---------------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        if self.closed:
            return
        self.tls.write(data)
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            at = max(self.loop.time() + self.half, self.last_out)
            self.last_out = at
            self.loop.call_at(at, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if not self.closed:
            self.client.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_at(max(self.loop.time(), self.last_out) + 0.001, self._close_now)

    def _close_now(self) -> None:
        for writer in (self.client, self.upstream):
            writer.close()


async def serve(rtt: float, upstream_port: int, pem: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(pem)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        Stats.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        link = Link(rtt, context, writer, up_writer)

        async def pump_client() -> None:
            while data := await reader.read(65536):
                link.from_client(data)
            link.from_client(b"")

        async def pump_upstream() -> None:
            while data := await up_reader.read(65536):
                link.from_upstream(data)
            link.close()

        try:
            await asyncio.gather(pump_client(), pump_upstream())
        except (ConnectionError, OSError):
            link.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with server:
        while line := await stdin.readline():
            if line.strip() == b"stats":
                print(json.dumps({"connections": Stats.connections, "requests": Stats.requests}), flush=True)
                Stats.connections = Stats.requests = 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt", type=float, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    parser.add_argument("--pem", required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.rtt, options.upstream, options.pem))


if __name__ == "__main__":
    main()
