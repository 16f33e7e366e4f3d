"""Figure 10 (issue 22): what the OpenAI-compatible gateway adds, against the SDK direct in the same run.

The fake server stamps each token with its ``time.monotonic_ns()``; the
latency of a token is when the reader got it minus that stamp. The gateway
runs on uvicorn in this process (a thread), so the CPU measured for it
includes the gateway's own work.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import openai
import uvicorn

import h2o_sdk
from h2o_sdk.gateway import create_app

MESSAGES: Any = [{"role": "user", "content": "Hi"}]


@contextmanager
def gateway(url: str) -> Iterator[str]:
    config = uvicorn.Config(create_app(url, max_concurrency=256), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def _delays_direct(client: h2o_sdk.Client) -> tuple[list[float], float]:
    delays, start, first = [], time.perf_counter(), 0.0
    for text in client.stream("Hi"):
        if not first:
            first = time.perf_counter() - start
        if text.strip().isdigit():
            delays.append((time.monotonic_ns() - int(text)) / 1e6)
    return delays, first


def _delays_gateway(api: openai.OpenAI) -> tuple[list[float], float]:
    delays, start, first = [], time.perf_counter(), 0.0
    for chunk in api.chat.completions.create(model="", messages=MESSAGES, stream=True):
        text = chunk.choices[0].delta.content if chunk.choices else None
        if not text:
            continue
        if not first:
            first = time.perf_counter() - start
        if text.strip().isdigit():
            delays.append((time.monotonic_ns() - int(text)) / 1e6)
    return delays, first


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else float("nan")


def figure(report: Any, fake_server: Callable[..., Any], tokens: int, runs: int, concurrent: int) -> None:
    print(f"10. the gateway: {tokens} tokens at 100/s, {runs} runs; {concurrent} streams at once", flush=True)
    with fake_server(tokens, 0.01) as url, gateway(url) as front, h2o_sdk.Client(url) as client:
        api = openai.OpenAI(base_url=front + "/v1", api_key="unused", max_retries=0)
        _delays_direct(client)  # both warm: detected, connected, the session made
        _delays_gateway(api)
        direct: list[float] = []
        through: list[float] = []
        firsts_direct, firsts_through = [], []
        for _ in range(runs):  # taking turns, so both see the same machine
            delays, first = _delays_direct(client)
            direct += delays
            firsts_direct.append(first)
            delays, first = _delays_gateway(api)
            through += delays
            firsts_through.append(first)
        api.close()
    added50 = statistics.median(through) - statistics.median(direct)
    added99 = _pct(through, 99) - _pct(direct, 99)
    report.add("gateway added latency per token p50 / p99", f"{added50:.2f} / {added99:.2f} ms",
               "p99 < 5 ms", added99 < 5)
    through_ms, direct_ms = statistics.median(firsts_through) * 1e3, statistics.median(firsts_direct) * 1e3
    # With a model that answers at once the ratio is all fixed cost: the HTTP hop through uvicorn and the
    # openai client's own work (the gateway's handling is ~0.2 ms of it). Shown, not judged.
    report.add("gateway first token / SDK direct, model answering at once",
               f"{through_ms / direct_ms:.2f}x (+{through_ms - direct_ms:.1f} ms: {through_ms:.1f} vs "
               f"{direct_ms:.1f} ms)")
    _first_token_with_a_model(report, fake_server, runs)

    with fake_server(20, 0.05) as url:
        direct_cpu, direct_tokens = _cpu(lambda: _async_direct(url, concurrent))
        with gateway(url) as front:
            gateway_cpu, gateway_tokens = _cpu(lambda: _async_gateway(front, concurrent))
    report.add(f"gateway {concurrent} streams: tokens delivered", f"{gateway_tokens} of {direct_tokens}",
               "all", gateway_tokens == direct_tokens)
    per_direct, per_gateway = direct_cpu / max(direct_tokens, 1), gateway_cpu / max(gateway_tokens, 1)
    report.add(f"gateway {concurrent} streams: CPU per token / SDK direct",
               f"{per_gateway / per_direct:.2f}x ({per_gateway * 1e6:.0f} vs {per_direct * 1e6:.0f} us)")


def _first_token_with_a_model(report: Any, fake_server: Callable[..., Any], runs: int, delay: float = 0.2) -> None:
    """The first token when the model takes ``delay`` to its first token, as a small one does."""
    with fake_server(5, 0.01, first_token_delay=delay) as url, gateway(url) as front, h2o_sdk.Client(url) as client:
        api = openai.OpenAI(base_url=front + "/v1", api_key="unused", max_retries=0)
        _delays_direct(client)
        _delays_gateway(api)
        direct, through = [], []
        for _ in range(max(runs, 3)):
            direct.append(_delays_direct(client)[1])
            through.append(_delays_gateway(api)[1])
        api.close()
    ratio = statistics.median(through) / statistics.median(direct)
    report.add(f"gateway first token / SDK direct, model's first token after {delay * 1e3:.0f} ms",
               f"{ratio:.2f}x ({statistics.median(through) * 1e3:.1f} vs {statistics.median(direct) * 1e3:.1f} ms)",
               "<= 1.2x", ratio <= 1.2)


def _cpu(fn: Callable[[], int]) -> tuple[float, int]:
    cpu = time.process_time()
    count = fn()
    return time.process_time() - cpu, count


def _async_direct(url: str, count: int) -> int:
    async def main() -> int:
        total = 0

        async def one() -> None:
            nonlocal total
            async for _ in client.stream("Hi"):
                total += 1

        async with h2o_sdk.AsyncClient(url, max_concurrency=256) as client, anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)
        return total

    return anyio.run(main)


def _async_gateway(front: str, count: int) -> int:
    async def main() -> int:
        total = 0
        api = openai.AsyncOpenAI(base_url=front + "/v1", api_key="unused", max_retries=0)

        async def one() -> None:
            nonlocal total
            stream = await api.chat.completions.create(model="", messages=MESSAGES, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    total += 1

        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)
        await api.close()
        return total

    return anyio.run(main)
