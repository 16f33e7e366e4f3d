"""The benchmark runner keeps going when one figure or one baseline fails (issue 18.3)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

import benchmarks.__main__ as runner
from benchmarks import network


def test_a_figure_that_fails_is_reported_and_the_others_still_run(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[str] = []
    names = ("burst", "families", "latency", "per_chat", "concurrent", "split", "cancellation", "memory",
             "import_time", "tls", "network_figure")
    for name in names:
        def fake(report: runner.Report, *args: Any, name: str = name) -> None:
            ran.append(name)
            if name == "per_chat":
                raise TimeoutError("the baseline hit its own timeout")
            report.add(name, "ok")

        monkeypatch.setattr(runner, name, fake)
    assert runner.main(["--quick"]) == 1
    assert ran == list(names)  # every figure after the failed one ran
    out = capsys.readouterr().out
    assert "figure per_chat: FAILED: TimeoutError: the baseline hit its own timeout" in out


def test_a_baseline_that_fails_keeps_the_sdk_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    def baseline(main: Any) -> Any:
        main.close()  # the coroutine is never awaited: close it
        raise asyncio.TimeoutError()

    monkeypatch.setattr(anyio, "run", lambda main: [1.0, 2.0, 3.0])
    monkeypatch.setattr(asyncio, "run", baseline)
    result = network.concurrent_first_tokens("http://127.0.0.1:9", 3)
    assert result["sdk_p50"] == 2.0 and result["aiohttp_failed"].startswith("TimeoutError")
