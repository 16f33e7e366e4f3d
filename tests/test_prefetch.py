"""Spare conversations (prefetch): a chat takes the spare being made rather than making its own (issue 18.3)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from h2o_sdk._http import Abort
from h2o_sdk._prefetch import Spares


def spares(create: Callable[[Abort], str], jobs: list[threading.Thread]) -> Spares:
    def run(job: Callable[[], None]) -> None:
        thread = threading.Thread(target=job)
        jobs.append(thread)
        thread.start()

    return Spares(1, create=create, model=lambda: "m", run=run, delete=lambda cid: None, wait=10.0)


def test_a_chat_waits_for_the_spare_under_way_instead_of_creating_its_own() -> None:
    answered = threading.Event()
    jobs: list[threading.Thread] = []

    def create(abort: Abort) -> str:
        answered.wait(10)  # the create's answer is on its way
        return "spare-1"

    pool = spares(create, jobs)
    prompt_sent = threading.Event()
    prompt_sent.set()
    pool.refill(prompt_sent)  # the previous reply's refill, its create under way ...
    pool.refill(prompt_sent)  # (one under way is enough: nothing more is reserved)
    assert len(jobs) == 1
    threading.Timer(0.1, answered.set).start()
    assert pool.take("m") == "spare-1"  # ... is taken once its answer is in
    for job in jobs:
        job.join(10)


def test_nothing_under_way_means_no_wait_and_another_model_never_waits() -> None:
    jobs: list[threading.Thread] = []
    pool = spares(lambda abort: "never", jobs)
    assert pool.take("m") is None  # nothing ready, nothing coming
    blocked, go = threading.Event(), threading.Event()
    go.set()
    def late(abort: Abort) -> str:
        blocked.wait(10)
        return "late"

    pool = spares(late, jobs)
    pool.refill(go)
    assert pool.take("other/model") is None  # not the client's model: no wait
    blocked.set()
    for job in jobs:
        job.join(10)


def test_a_failed_create_wakes_the_waiting_chat() -> None:
    jobs: list[threading.Thread] = []

    def create(abort: Abort) -> str:
        raise RuntimeError("the server refused")

    pool = spares(create, jobs)
    gate = threading.Event()
    pool.refill(gate)
    threading.Timer(0.1, gate.set).start()
    assert pool.take("m") is None  # the chat creates its own
    for job in jobs:
        job.join(10)
