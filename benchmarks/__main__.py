"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME ...] [--write]``.

Every figure is a ratio against baselines measured in the same run; the fake
server runs in another process and the client's own CPU time is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import requests
from sseclient import SSEClient

import h2o_sdk
from benchmarks.baselines import seed_stream

MODEL = h2o_sdk.DEFAULT_MODEL
README = Path(__file__).with_name("README.md")


@dataclass
class Figure:
    name: str
    value: str
    goal: str = ""
    met: bool | None = None


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, value: str, goal: str = "", met: bool | None = None) -> None:
        figure = Figure(name, value, goal, met)
        self.figures.append(figure)
        status = "" if met is None else ("  [met]" if met else "  [NOT met]")
        print(f"  {name}: {value}{'  goal: ' + goal if goal else ''}{status}", flush=True)

    def markdown(self) -> str:
        rows = ["| figure | result | goal | met |", "|---|---|---|---|"]
        for f in self.figures:
            met = "" if f.met is None else ("yes" if f.met else "**no**")
            rows.append(f"| {f.name} | {f.value} | {f.goal} | {met} |")
        return "\n".join(rows)


@contextlib.contextmanager
def fake_server(tokens: int, pace: float = 0.0, *, close_delimited: bool = False, stall: bool = False,
                tls: str | None = None, family: str = "0.4", first_token_delay: float = 0.0) -> Iterator[str]:
    args = [sys.executable, "-m", "benchmarks._server", "--tokens", str(tokens), "--pace", str(pace),
            "--family", family, "--first-token-delay", str(first_token_delay)]
    args += ["--close-delimited"] * close_delimited + ["--stall"] * stall + (["--tls", tls] if tls else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split()[1])
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def measure(fn: Callable[[], int]) -> tuple[float, float, int]:
    """Wall seconds, client CPU seconds, and the count ``fn`` returns."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    count = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, count


def best(runs: int, fn: Callable[[], int]) -> tuple[float, float, int]:
    results = [measure(fn) for _ in range(runs)]
    return min(results, key=lambda r: r[1])


# -- the ways of reading a stream ------------------------------------------------------


def _read_lines(response: requests.Response) -> int:
    """The floor's reading: iter_lines and json.loads of each ``data:`` line."""
    count = 0
    for line in response.iter_lines():
        if line.startswith(b"data:"):
            json.loads(line[5:])
            count += 1
    return count


def _read_sse(response: requests.Response) -> int:
    """The design's parser: requests' chunks through sseclient-py, then json.loads."""
    count = 0
    for event in SSEClient(response.iter_content(chunk_size=None)).events():
        json.loads(event.data)
        count += 1
    return count


def floor_turn(session: requests.Session, url: str, read: Callable[[requests.Response], int] = _read_lines) -> int:
    """One chat on a session that has accepted the settings: create, prompt, delete."""
    cid = session.post(url + "/conversation", json={"model": MODEL}).json()["conversationId"]
    with session.post(f"{url}/conversation/{cid}", json={"inputs": "Hi", "parameters": {}, "stream": True,
                                                         "options": {}}, stream=True) as response:
        count = read(response)
    session.delete(f"{url}/conversation/{cid}")
    return count


def floor_chat(url: str, read: Callable[[requests.Response], int] = _read_lines) -> int:
    """The smallest hand-written loop: requests, iter_lines and json.loads (no SDK)."""
    with requests.Session() as session:
        session.post(url + "/settings", data={"ethicsModalAccepted": "true"}, headers={"Referer": url + "/"})
        return floor_turn(session, url, read)


def sse_floor_chat(url: str) -> int:
    """The floor with the design's parser: requests' chunks through sseclient-py, and json.loads."""
    return floor_chat(url, _read_sse)


def sdk_chat(url: str) -> int:
    with h2o_sdk.Client(url) as client:
        return sum(1 for _ in client.stream("Hi", max_new_tokens=10**9).tokens())


def seed_chat(url: str) -> int:
    async def run() -> int:
        return len([t async for t in seed_stream(url, MODEL, [{"role": "user", "content": "Hi"}])]) + 1

    return asyncio.run(run())


def async_chat(url: str) -> int:
    async def run() -> int:
        async with h2o_sdk.AsyncClient(url) as client:
            return len([t async for t in client.stream("Hi", max_new_tokens=10**9).tokens()])

    return anyio.run(run)


# -- the figures ------------------------------------------------------------------------


def burst(report: Report, tokens: int, runs: int) -> None:
    print(f"1. burst: one stream of {tokens} tokens", flush=True)
    with fake_server(tokens) as url:
        results = {name: best(runs, functools.partial(fn, url)) for name, fn in
                   [("floor", floor_chat), ("sse floor", sse_floor_chat), ("sdk", sdk_chat), ("seed", seed_chat),
                    ("async", async_chat)]}
    rate = {name: r[2] / r[0] for name, r in results.items()}
    cpu = {name: r[1] / r[2] * 1e6 for name, r in results.items()}
    for name in results:
        report.add(f"burst {name}", f"{rate[name]:,.0f} tokens/s, {cpu[name]:.1f} µs CPU/token")
    report.add("burst SDK / floor (tokens/s)", f"{rate['sdk'] / rate['floor']:.2f}x", ">= 0.8x",
               rate["sdk"] / rate["floor"] >= 0.8)
    report.add("burst SDK / seed's way (tokens/s)", f"{rate['sdk'] / rate['seed']:.2f}x", ">= 1x",
               rate["sdk"] / rate["seed"] >= 1)
    report.add("burst SDK / sse floor (tokens/s)", f"{rate['sdk'] / rate['sse floor']:.2f}x")
    report.add("burst sse floor / seed's way (tokens/s)", f"{rate['sse floor'] / rate['seed']:.2f}x")
    report.add("burst AsyncClient / Client (CPU per token)", f"{cpu['async'] / cpu['sdk']:.2f}x", "<= 2x",
               cpu["async"] / cpu["sdk"] <= 2)


def family_chat(url: str) -> int:
    """One reply through the SDK, whatever family the server speaks (detected, as users run it)."""
    with h2o_sdk.Client(url) as client:
        return sum(1 for _ in client.stream("Hi").tokens())


def families(report: Report, tokens: int, runs: int) -> None:
    print(f"1b. burst per protocol family: one stream of {tokens} tokens", flush=True)
    cpu: dict[str, float] = {}
    for family in ("0.4", "0.7", "0.8", "0.9", "0.10"):
        with fake_server(tokens, family=family) as url:
            wall, seconds, count = best(runs, functools.partial(family_chat, url))
        assert count == tokens + (family == "0.4"), (family, count)  # 0.4's end token is a token too
        cpu[family] = seconds / count * 1e6
        report.add(f"burst {family}", f"{count / wall:,.0f} tokens/s, {cpu[family]:.1f} µs CPU/token")
    for family in ("0.7", "0.8", "0.9", "0.10"):
        ratio = cpu[family] / cpu["0.4"]
        report.add(f"burst {family} JSON lines / 0.4 SSE (CPU per token)", f"{ratio:.2f}x", "<= 1x", ratio <= 1)


def latency(report: Report, tokens: int) -> None:
    print(f"2. added latency: {tokens} tokens at 100/s", flush=True)
    for close in (False, True):
        delays = []
        with fake_server(tokens, 0.01, close_delimited=close) as url, h2o_sdk.Client(url) as client:
            for text in client.stream("Hi"):
                if text.strip().isdigit():
                    delays.append((time.monotonic_ns() - int(text)) / 1e6)
        p50, p99 = statistics.median(delays), _pct(delays, 99)
        kind = "close-delimited" if close else "chunked"
        report.add(f"latency {kind} p50 / p99", f"{p50:.2f} / {p99:.2f} ms", "p99 < 2 ms", p99 < 2)


def _repeat(way: Callable[[], object], times: int) -> int:
    for _ in range(times):
        way()
    return times


def per_chat(report: Report, chats: int, runs: int) -> None:
    print(f"3. per-chat overhead: {chats} short chats in a row", flush=True)
    with fake_server(5) as url:
        sent: list[str] = []
        with h2o_sdk.Client(url) as client, requests.Session() as bare:
            session = client._http._session  # counted from outside, as a caller would see it
            session.hooks["response"].append(lambda response, **_: sent.append(response.request.method))
            client.chat("warm")
            pools = session.get_adapter(url).poolmanager.pools  # type: ignore[attr-defined]

            def connections() -> int:
                # urllib3's container refuses plain iteration; keys() is its snapshot
                return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118

            before, connections_before = len(sent), connections()
            # The floor of any client built on requests: the same three requests, nothing else.
            bare.trust_env = False
            bare.post(url + "/settings", data={"ethicsModalAccepted": "true"}, headers={"Referer": url + "/"})
            ways: dict[str, Callable[[], object]] = {
                "sdk": lambda: client.chat("Hi"), "seed": lambda: seed_chat(url), "bare": lambda: floor_turn(bare, url)}
            walls: dict[str, float] = {}
            # Taking turns, best of ``runs`` each, as in figure 4.
            for _ in range(runs):
                for name, way in ways.items():
                    wall, _, _ = measure(functools.partial(_repeat, way, chats))
                    walls[name] = min(walls.get(name, wall), wall)
            per_request = (len(sent) - before) / (chats * runs)
            new_connections = connections() - connections_before
    report.add("HTTP requests per chat (warm Client)", f"{per_request:.2f}", "3 (settings once per session)",
               per_request == 3)
    report.add(f"new connections over {chats * runs} chats", str(new_connections), "0 (reused)",
               new_connections == 0)
    speedup = walls["seed"] / walls["sdk"]
    report.add("wall per chat, SDK vs seed's way",
               f"{walls['sdk'] / chats * 1e3:.2f} ms vs {walls['seed'] / chats * 1e3:.2f} ms ({speedup:.1f}x faster)",
               ">= 2x faster", speedup >= 2)
    report.add("wall per chat, bare requests (3 requests, no SDK) vs seed's way",
               f"{walls['bare'] / chats * 1e3:.2f} ms ({walls['seed'] / walls['bare']:.1f}x faster)")


TICK = 0.005


async def _ticker(lags: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await anyio.sleep(TICK)
        lags.append((time.perf_counter() - start - TICK) * 1e3)


def _lag_p99(lags: list[float]) -> float:
    """The lag the loop stays under 99% of the time.

    Each sample is weighted by the time it covers (the tick plus its lateness):
    a loop frozen for a second swallowed about 200 ticks and weighs as much,
    where a plain percentile would count it once among thousands.
    """
    ordered = sorted(lags)
    total = sum(TICK * 1e3 + lag for lag in ordered)
    covered = 0.0
    for lag in ordered:
        covered += TICK * 1e3 + lag
        if covered >= total * 0.99:
            return lag
    return float("nan")


async def _streams(url: str, kind: str, count: int, lags: list[float]) -> int:
    """``count`` concurrent streams read by the AsyncClient or by the seed's aiohttp flow."""
    stop = anyio.Event()
    delivered = 0

    async def one_sdk(client: h2o_sdk.AsyncClient) -> None:
        nonlocal delivered
        async for _ in client.stream("Hi"):
            delivered += 1

    async def one_seed() -> None:
        nonlocal delivered
        # aiohttp's cookie jar ignores IP-address hosts: use a name
        async for _ in seed_stream(url.replace("127.0.0.1", "localhost"), MODEL, [{"role": "user", "content": "Hi"}]):
            delivered += 1

    async with anyio.create_task_group() as outer:
        outer.start_soon(_ticker, lags, stop)
        if kind == "async":
            async with h2o_sdk.AsyncClient(url, max_concurrency=count) as client, anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(one_sdk, client)
        else:
            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(one_seed)
        stop.set()
    return delivered


def _run_streams(url: str, count: int, *, kind: str, lags: list[float]) -> int:
    return asyncio.run(_streams(url, kind, count, lags))


def _in_threads(count: int, work: Callable[[int], int], *, together: bool = False) -> int:
    """``work(i)`` in ``count`` threads (``together``: released at once by a barrier); the sum of the results."""
    barrier = threading.Barrier(count) if together else None
    results = [0] * count

    def one(index: int) -> None:
        if barrier is not None:
            barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results)


def _threads(url: str, count: int) -> int:
    """``count`` plain threads each reading one stream with the blocking Client: no event loop."""
    with h2o_sdk.Client(url, max_connections=count) as client:
        return _in_threads(count, lambda index: sum(1 for _ in client.stream("Hi")))


KINDS = ("async", "aiohttp", "threads")


def _concurrent_way(kind: str, lags: list[float]) -> Callable[[str, int], int]:
    """How ``kind`` reads ``count`` concurrent streams from ``url``."""
    return _threads if kind == "threads" else functools.partial(_run_streams, kind=kind, lags=lags)


def concurrent(report: Report, counts: list[int], tokens: int, pace: float, runs: int) -> None:
    print(f"4. AsyncClient: concurrent streams of {tokens} tokens at {1 / pace:.0f} tokens/s", flush=True)
    for count in counts:
        results: dict[str, tuple[float, int, float, float]] = {}
        with fake_server(tokens, pace) as url:
            # Taking turns, best of ``runs`` each: neither side pays alone for a cold start.
            for kind in KINDS * runs:
                lags: list[float] = []
                _, cpu, delivered = measure(functools.partial(_concurrent_way(kind, lags), url, count))
                if kind not in results or cpu < results[kind][0]:
                    results[kind] = (cpu, delivered, _lag_p99(lags), max(lags, default=float("nan")))
        (cpu, delivered, lag, most), (base_cpu, base_delivered, base_lag, base_most) = (results["async"],
                                                                                        results["aiohttp"])
        ratio = cpu / base_cpu
        report.add(f"{count} streams: tokens delivered", f"{delivered} of {count * tokens}", "all",
                   delivered == count * tokens)
        report.add(f"{count} streams: client CPU per token, AsyncClient vs aiohttp",
                   f"{cpu / max(delivered, 1) * 1e6:.0f} vs {base_cpu / max(base_delivered, 1) * 1e6:.0f} µs "
                   f"({ratio:.2f}x)", "<= 1.5x", ratio <= 1.5)
        report.add(f"{count} streams: event-loop lag p99 (time-weighted) / max, AsyncClient vs aiohttp",
                   f"{lag:.1f} / {most:.1f} vs {base_lag:.1f} / {base_most:.1f} ms", "p99 < 10 ms", lag < 10)
        thread_cpu, thread_delivered, _, _ = results["threads"]
        report.add(f"{count} streams: client CPU per token, plain threads with the blocking Client (no event loop)",
                   f"{thread_cpu / max(thread_delivered, 1) * 1e6:.0f} µs ({thread_cpu / base_cpu:.2f}x aiohttp)")


def split(report: Report, count: int, sizes: tuple[int, int], seconds: float, runs: int) -> None:
    """Each way's CPU split into a cost per stream and a cost per token.

    ``count`` streams of a short and of a long reply, each lasting ``seconds``; the
    line through the two points gives the CPU a stream costs whatever its length
    (requests, threads, tasks) and the CPU each further token costs.
    """
    short, long = sizes
    print(f"4b. {count} streams of {short} and of {long} tokens over {seconds:.0f} s: CPU per stream and per token",
          flush=True)
    cpu: dict[tuple[str, int], float] = {}
    for tokens in sizes:
        with fake_server(tokens, seconds / tokens) as url:
            for kind in KINDS * runs:
                _, used, delivered = measure(functools.partial(_concurrent_way(kind, []), url, count))
                if delivered != count * tokens:
                    raise SystemExit(f"{kind}: {delivered} of {count * tokens} tokens delivered")
                cpu[kind, tokens] = min(used / count, cpu.get((kind, tokens), float("inf")))
    costs = {}
    for kind in KINDS:
        per_token = (cpu[kind, long] - cpu[kind, short]) / (long - short)
        costs[kind] = (cpu[kind, short] - short * per_token, per_token)
    (base_stream, base_token) = costs["aiohttp"]
    for kind, name in (("async", "AsyncClient"), ("threads", "plain threads (blocking Client)")):
        stream, token = costs[kind]
        report.add(f"{count} streams, CPU per stream / per token: {name} vs aiohttp",
                   f"{stream * 1e3:.2f} ms / {token * 1e6:.0f} µs vs {base_stream * 1e3:.2f} ms / "
                   f"{base_token * 1e6:.0f} µs ({stream / base_stream:.2f}x / {token / base_token:.2f}x)")


def cancellation(report: Report, runs: int) -> None:
    print(f"5. cancelling a silent stream ({runs} times)", flush=True)
    times: list[float] = []

    async def run(url: str) -> None:
        async with h2o_sdk.AsyncClient(url) as client:
            for _ in range(runs):
                stream = client.stream("Hi")
                await stream.__anext__()
                started = time.perf_counter()
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await stream.__anext__()
                times.append((time.perf_counter() - started) * 1e3)

    with fake_server(10, stall=True) as url:
        anyio.run(run, url)
    report.add("cancellation of a silent stream, median / max", f"{statistics.median(times):.1f} / {max(times):.1f} ms",
               "< 100 ms", max(times) < 100)


def memory(report: Report, tokens: int) -> None:
    print(f"6. memory: RSS growth while streaming {tokens} tokens", flush=True)
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    with fake_server(tokens) as url, h2o_sdk.Client(url) as client:
        gc.collect()
        start = peak = rss()
        with client.stream("Hi", max_new_tokens=10**9) as stream:
            for index, _ in enumerate(stream):
                if index % 10_000 == 0:
                    peak = max(peak, rss())
        peak = max(peak, rss())
        kept = len(stream.text.encode())
    ratio = (peak - start) / kept
    report.add("RSS growth / text kept", f"{(peak - start) / 2**20:.1f} MiB for {kept / 2**20:.1f} MiB of text "
               f"({ratio:.1f}x)", "<= 2x", ratio <= 2)


def tls(report: Report, count: int, runs: int) -> None:
    """Item 15 of the hardening issue: streams started at once on a new client over TLS."""
    import tempfile

    import trustme

    print(f"8. TLS: {count} chats started at once, each on a new connection of one new client", flush=True)
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as folder:
        bundle, pem = os.path.join(folder, "ca.pem"), os.path.join(folder, "server.pem")
        # A private CA added to the usual public bundle, as a deployment's CA file looks: what
        # costs is loading ~150 certificates per connection.
        with open(requests.utils.DEFAULT_CA_BUNDLE_PATH, "rb") as public, open(bundle, "wb") as out:
            out.write(public.read() + b"\n" + ca.cert_pem.bytes())
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
        with fake_server(5, tls=pem) as url:

            def at_once(chat: Callable[[int], int]) -> int:
                return _in_threads(count, chat, together=True)

            def sdk() -> int:
                with h2o_sdk.Client(url, verify=bundle, max_connections=count) as client:
                    client.chat("Hi")  # the welcome modal, once
                    return at_once(lambda index: len(client.chat("Hi").tokens))

            def floor() -> int:
                # requests as it comes: urllib3 builds a TLS context (and loads the CA) per connection.
                with requests.Session() as session:
                    session.verify = bundle
                    session.trust_env = False  # else $REQUESTS_CA_BUNDLE overrides session.verify
                    session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=count))
                    session.post(url + "/settings", data={"ethicsModalAccepted": "true"},
                                 headers={"Referer": url + "/"})
                    return at_once(lambda index: floor_turn(session, url))

            results = {}
            for _ in range(runs):  # the two ways take turns
                for name, way in (("sdk", sdk), ("floor", floor)):
                    wall, cpu, _ = measure(way)
                    if name not in results or cpu < results[name][1]:
                        results[name] = (wall, cpu)
    (sdk_wall, sdk_cpu), (floor_wall, floor_cpu) = results["sdk"], results["floor"]
    report.add(f"{count} TLS chats at once: client CPU, SDK vs bare requests",
               f"{sdk_cpu * 1e3:.0f} vs {floor_cpu * 1e3:.0f} ms ({sdk_cpu / floor_cpu:.2f}x)", "<= 1x",
               sdk_cpu <= floor_cpu)
    report.add(f"{count} TLS chats at once: wall, SDK vs bare requests",
               f"{sdk_wall * 1e3:.0f} vs {floor_wall * 1e3:.0f} ms ({sdk_wall / floor_wall:.2f}x)")


def network_figure(report: Report, rtts: list[float], chats: int, concurrent: int) -> None:
    """Figure 9: chats through a delay proxy with TLS, in RTT multiples (``benchmarks/network.py``)."""
    from benchmarks import network

    goals = {  # way -> (first token at most, last token to return at most), in RTTs
        "warm Client": (2.1, 0.1),
        "warm Client, prefetch=1": (1.1, 0.1),
        "first chat after connect()": (2.1, 0.1),
        "first chat after connect(), prefetch=1": (1.1, 0.1),
    }
    for rtt in rtts:
        print(f"9. network: TLS and RTT {rtt * 1e3:.0f} ms, a 20-token reply, median of {chats} chats", flush=True)
        for result in network.run(rtt, chats, concurrent):
            name = f"RTT {rtt * 1e3:.0f} ms, {result['way']}"
            if "sdk_p50" in result or "sdk_failed" in result:
                label = f"{name}: first token p50, AsyncClient vs aiohttp on one session"
                if "sdk_p50" in result and "aiohttp_p50" in result:
                    ratio = result["sdk_p50"] / result["aiohttp_p50"]
                    report.add(label, f"{result['sdk_p50']:.2f} vs {result['aiohttp_p50']:.2f} RTT ({ratio:.2f}x)",
                               "<= 1.1x", ratio <= 1.1)
                else:
                    ours = f"{result['sdk_p50']:.2f} RTT" if "sdk_p50" in result else f"FAILED ({result['sdk_failed']})"
                    theirs = (f"{result['aiohttp_p50']:.2f} RTT" if "aiohttp_p50" in result
                              else f"FAILED ({result['aiohttp_failed']})")
                    report.add(label, f"{ours} vs {theirs}", "<= 1.1x", False if "sdk_failed" in result else None)
                continue
            first_goal, tail_goal = goals.get(result["way"], (None, None))
            value = (f"first token {result['first']:.2f}, last token to return {result['tail']:.2f}, "
                     f"wall {result['wall']:.2f} RTT; {result['connections']:.1f} connections, "
                     f"{result['requests']:.1f} requests per chat")
            if first_goal is None or tail_goal is None:
                report.add(name, value)
            else:
                report.add(name, value, f"first <= {first_goal} RTT, tail <= {tail_goal} RTT",
                           result["first"] <= first_goal and result["tail"] <= tail_goal)


def import_time(report: Report, runs: int) -> None:
    print("7. import time", flush=True)

    import tempfile

    # With bytecode cached for both sides, as an installed package has it: this machine sets
    # PYTHONDONTWRITEBYTECODE, which made the figure time the compiling of our sources.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cache = tempfile.mkdtemp(prefix="h2o-bench-pyc-")

    def cost(statement: str) -> float:
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        command = [sys.executable, "-X", f"pycache_prefix={cache}", "-c", code]
        subprocess.run(command, capture_output=True, check=True, env=env)  # fills the cache
        return min(float(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)
                   for _ in range(runs))

    # `import h2o_sdk` alone loads nothing (names resolve on first use): time what a script does.
    base, ours = cost("import requests"), cost("from h2o_sdk import Client")
    extra = (ours - base) * 1e3
    report.add("from h2o_sdk import Client vs import requests",
               f"{ours * 1e3:.0f} vs {base * 1e3:.0f} ms ({extra:+.0f} ms)", "<= +30 ms", extra <= 30)
    import shutil

    shutil.rmtree(cache, ignore_errors=True)


def _gateway_figure(report: Report, tokens: int, runs: int, concurrent: int) -> None:
    from benchmarks.gateway import figure  # uvicorn and openai load only for this figure

    figure(report, fake_server, tokens, runs, concurrent)


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that everything runs")
    parser.add_argument("--only", nargs="*", default=None,
                        help="burst families latency per_chat concurrent split cancellation memory import tls "
                             "network gateway")
    parser.add_argument("--write", action="store_true", help="write the results table into benchmarks/README.md")
    options = parser.parse_args(argv)
    quick = options.quick
    report = Report()
    plan: dict[str, Callable[[], None]] = {
        "burst": lambda: burst(report, 20_000 if quick else 200_000, 1 if quick else 3),
        "families": lambda: families(report, 20_000 if quick else 200_000, 1 if quick else 3),
        "latency": lambda: latency(report, 20 if quick else 300),
        "per_chat": lambda: per_chat(report, 10 if quick else 100, 1 if quick else 3),
        "concurrent": lambda: concurrent(report, [1, 10] if quick else [1, 100, 1000], 10 if quick else 40,
                                         0.05, 1 if quick else 2),
        "split": lambda: split(report, 10 if quick else 100, (5, 20) if quick else (10, 200), 1 if quick else 2,
                               1 if quick else 2),
        "cancellation": lambda: cancellation(report, 3 if quick else 20),
        "memory": lambda: memory(report, 20_000 if quick else 1_000_000),
        "import": lambda: import_time(report, 2 if quick else 7),
        "tls": lambda: tls(report, 5 if quick else 50, 1 if quick else 3),
        "network": lambda: network_figure(report, [0.02] if quick else [0.02, 0.1, 0.3], 3 if quick else 10,
                                          5 if quick else 50),
        "gateway": lambda: _gateway_figure(report, 20 if quick else 300, 1 if quick else 3, 10 if quick else 100),
    }
    failed = []
    for name, run in plan.items():
        if options.only is None or name in options.only:
            try:
                run()
            except Exception as exc:  # one figure's failure ends that figure, not the run (issue 18.3)
                traceback.print_exc()
                failed.append(name)
                report.add(f"figure {name}", f"FAILED: {type(exc).__name__}: {str(exc)[:200]}", "runs", False)
    if options.write:
        _write(report)
    return 1 if failed else 0


def _write(report: Report) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    stamp = time.strftime("%Y-%m-%d")
    text = README.read_text() if README.exists() else ""
    marker = "<!-- results -->"
    head = text.split(marker)[0] if marker in text else text
    README.write_text(f"{head}{marker}\n\nRun on {stamp}, {machine}.\n\n{report.markdown()}\n")


if __name__ == "__main__":
    sys.exit(main())
