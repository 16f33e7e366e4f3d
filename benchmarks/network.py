"""The network figure: chats through a delay proxy with TLS, in multiples of the round trip.

    python -m benchmarks.network --rtt 0.1 --chats 20

Starts the fast fake server (a 20-token reply at full speed) and, in front of
it, ``benchmarks._delay_proxy`` (TLS 1.3 with a throwaway certificate, RTT/2
each way, one RTT more for each new connection), then measures each way of
chatting in a child process that trusts the throwaway CA through the
environment (``REQUESTS_CA_BUNDLE`` for requests, ``SSL_CERT_FILE`` for
aiohttp), as a deployment with a private CA would. For every way it prints
one JSON line: the medians of the time to the first token, from the last token
to the call returning, and of the wall time per chat, all in RTTs, and the
connections and requests per chat the proxy counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"


@contextlib.contextmanager
def _process(args: list[str], **kwargs: Any) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kwargs)
    try:
        assert process.stdout is not None
        yield process, int(process.stdout.readline().split()[1])
    finally:
        process.terminate()
        process.wait(10)
        for stream in (process.stdout, process.stdin):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def network(rtt: float) -> Iterator[tuple[str, str, Callable[[], dict[str, int]]]]:
    """The URL of the delayed TLS front, the CA bundle to trust, and the proxy's counters."""
    import trustme

    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as folder:
        bundle, pem = os.path.join(folder, "ca.pem"), os.path.join(folder, "server.pem")
        ca.cert_pem.write_to_path(bundle)
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
        server = [sys.executable, "-m", "benchmarks._server", "--tokens", "20", "--pace", "0"]
        with _process(server) as (_, upstream):
            proxy = [sys.executable, "-m", "benchmarks._delay_proxy", "--rtt", str(rtt), "--upstream", str(upstream),
                     "--pem", pem]
            with _process(proxy) as (process, port):

                def stats() -> dict[str, int]:
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.write("stats\n")
                    process.stdin.flush()
                    return dict(json.loads(process.stdout.readline()))

                yield f"https://127.0.0.1:{port}", bundle, stats


# -- the ways, each timing one chat: (first token, last token, return) after its start -----------


def _sdk_turn(client: Any) -> tuple[float, float, float]:
    start = time.perf_counter()
    first = last = 0.0
    with client.stream("Hi") as stream:
        for _ in stream.tokens():
            last = time.perf_counter()
            first = first or last
    return first - start, last - start, time.perf_counter() - start


def _requests_turn(session: Any, url: str) -> tuple[float, float, float]:
    start = time.perf_counter()
    first = last = 0.0
    cid = session.post(url + "/conversation", json={"model": MODEL}).json()["conversationId"]
    with session.post(f"{url}/conversation/{cid}", json={"inputs": "Hi", "parameters": {}, "stream": True,
                                                         "options": {}}, stream=True) as response:
        for line in response.iter_lines():
            if line.startswith(b"data:"):
                json.loads(line[5:])
                last = time.perf_counter()
                first = first or last
    session.delete(f"{url}/conversation/{cid}")
    return first - start, last - start, time.perf_counter() - start


def _seed_turn(url: str) -> tuple[float, float, float]:
    from benchmarks.baselines import seed_stream

    async def run() -> tuple[float, float, float]:
        start = time.perf_counter()
        first = last = 0.0
        async for _ in seed_stream(url, MODEL, [{"role": "user", "content": "Hi"}]):
            last = time.perf_counter()
            first = first or last
        return first - start, last - start, time.perf_counter() - start

    return asyncio.run(run())


def measure_ways(url: str, chats: int, stats: Callable[[], dict[str, int]] | None) -> Iterator[dict[str, Any]]:
    import requests

    import h2o_sdk

    def way(name: str, setup: Callable[[], Any], turn: Callable[[Any], tuple[float, float, float]],
            teardown: Callable[[Any], None], per_chat_setup: bool) -> dict[str, Any]:
        timings = []
        state = None if per_chat_setup else setup()
        if stats is not None:
            stats()
        for _ in range(chats):
            if per_chat_setup:
                state = setup()
            timings.append(turn(state))
            if per_chat_setup:
                teardown(state)
        if not per_chat_setup:
            teardown(state)
        counted = stats() if stats is not None else {"connections": 0, "requests": 0}
        return {"way": name, "first": statistics.median(t[0] for t in timings),
                "tail": statistics.median(t[2] - t[1] for t in timings),
                "wall": statistics.median(t[2] for t in timings),
                "connections": counted["connections"] / chats, "requests": counted["requests"] / chats}

    def warm(prefetch: int) -> Callable[[], Any]:
        def setup() -> Any:
            client = h2o_sdk.Client(url, prefetch=prefetch)
            _sdk_turn(client)  # the first chat: connection, settings (and the spare)
            client.wait_cleanup()
            return client
        return setup

    def connected(prefetch: int) -> Callable[[], Any]:
        def setup() -> Any:
            client = h2o_sdk.Client(url, prefetch=prefetch)
            client.connect()
            return client
        return setup

    def bare_requests() -> Any:
        session = requests.Session()
        session.post(url + "/settings", data={"ethicsModalAccepted": "true"}, headers={"Referer": url + "/"})
        return session

    def close(client: Any) -> None:
        client.close()

    yield way("warm Client", warm(0), _sdk_turn, close, False)
    yield way("warm Client, prefetch=1", warm(1), _sdk_turn, close, False)
    yield way("first chat after connect()", connected(0), _sdk_turn, close, True)
    yield way("first chat after connect(), prefetch=1", connected(1), _sdk_turn, close, True)
    yield way("a new Client per chat", lambda: h2o_sdk.Client(url), _sdk_turn, close, True)
    yield way("the seed's way", lambda: None, lambda _: _seed_turn(url), lambda _: None, True)
    yield way("bare requests loop", bare_requests, lambda session: _requests_turn(session, url), close, False)


def concurrent_first_tokens(url: str, count: int) -> dict[str, Any]:
    """``count`` streams started at once on a fresh AsyncClient, and on one aiohttp session."""
    import aiohttp
    import anyio

    import h2o_sdk

    async def sdk() -> list[float]:
        start = time.perf_counter()
        firsts: list[float] = []
        async with h2o_sdk.AsyncClient(url) as client:

            async def one() -> None:
                async for _ in client.stream("Hi"):
                    firsts.append(time.perf_counter() - start)
                    break

            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(one)
        return firsts

    async def shared_session() -> list[float]:
        start = time.perf_counter()
        firsts: list[float] = []
        async with aiohttp.ClientSession(headers={"Referer": url + "/"}) as session:
            async with session.post(f"{url}/settings", data={"ethicsModalAccepted": "true"}) as response:
                response.raise_for_status()

            async def one() -> None:
                async with session.post(f"{url}/conversation", json={"model": MODEL}) as response:
                    cid = (await response.json())["conversationId"]
                body = {"inputs": "Hi", "parameters": {}, "stream": True, "options": {}}
                async with session.post(f"{url}/conversation/{cid}", json=body) as response:
                    async for line in response.content:
                        if line.startswith(b"data:"):
                            firsts.append(time.perf_counter() - start)
                            break
                async with session.delete(f"{url}/conversation/{cid}"):
                    pass

            await asyncio.gather(*(one() for _ in range(count)))
        return firsts

    result: dict[str, Any] = {"way": f"{count} AsyncClient streams at once"}
    # Each side on its own: a side that fails (a baseline hitting its own timeout on a loaded
    # machine) is reported as failed, and the other side's figure is kept (issue 18.3).
    for key, side in (("sdk", lambda: anyio.run(sdk)), ("aiohttp", lambda: asyncio.run(shared_session()))):
        try:
            result[f"{key}_p50"] = statistics.median(side())
        except Exception as exc:
            result[f"{key}_failed"] = f"{type(exc).__name__}: {exc}"[:200]
    return result


def run(rtt: float, chats: int, concurrent: int) -> list[dict[str, Any]]:
    """Everything for one RTT: the server, the proxy, and the child that measures."""
    with network(rtt) as (url, bundle, stats):
        env = {**os.environ, "REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle}
        env.pop("CURL_CA_BUNDLE", None)
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.network", "--child", url, "--chats", str(chats),
             "--concurrent", str(concurrent)],
            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env=env,
        )
        results = []
        assert child.stdout is not None and child.stdin is not None
        for line in child.stdout:
            message = json.loads(line)
            if message == "stats":  # the child asks for the proxy's counters
                child.stdin.write(json.dumps(stats()) + "\n")
                child.stdin.flush()
                continue
            results.append(message)
        child.wait(60)
        child.stdin.close()
        child.stdout.close()
        if child.returncode:
            raise RuntimeError(f"the network benchmark's child failed ({child.returncode})")
    for result in results:
        for key in ("first", "tail", "wall", "sdk_p50", "aiohttp_p50"):
            if key in result:
                result[key] /= rtt
    return results


def _child(url: str, chats: int, concurrent: int) -> None:
    lock = threading.Lock()

    def stats() -> dict[str, int]:
        with lock:
            print(json.dumps("stats"), flush=True)
            return dict(json.loads(sys.stdin.readline()))

    for result in measure_ways(url, chats, stats):
        print(json.dumps(result), flush=True)
    if concurrent:
        print(json.dumps(concurrent_first_tokens(url, concurrent)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rtt", type=float, default=0.1)
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        _child(options.child, options.chats, options.concurrent)
        return
    for result in run(options.rtt, options.chats, options.concurrent):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
