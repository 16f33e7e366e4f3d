"""The turn's state machine: every transition, and what each ended phase cleans up."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from h2o_sdk import APIConnectionError, APIStatusError, APITimeoutError, IncompleteStreamError
from h2o_sdk._lifecycle import CLEANUP, TRANSITIONS, Abort, Event, Phase, Turn, run_steps
from h2o_sdk._protocol import FAMILIES, Family, Prompt

P, E = Phase, Event

# Every legal transition, written out once more by hand: the table in the module must match it.
EXPECTED = {
    (P.NEW, E.CREATE): P.CREATING,
    (P.NEW, E.SEND): P.SENDING,
    (P.NEW, E.CUT): P.ABANDONED,
    (P.CREATING, E.SEND): P.SENDING,
    (P.CREATING, E.REFUSED): P.FAILED,
    (P.CREATING, E.LOST): P.FAILED,
    (P.CREATING, E.CUT): P.ABANDONED,
    (P.SENDING, E.HEADERS): P.STREAMING,
    (P.SENDING, E.REFUSED): P.FAILED,
    (P.SENDING, E.LOST): P.UNANSWERED,
    (P.SENDING, E.CUT): P.UNANSWERED,
    (P.STREAMING, E.FINAL): P.COMPLETED,
    (P.STREAMING, E.REFUSED): P.FAILED,
    (P.STREAMING, E.LOST): P.BROKEN,
    (P.STREAMING, E.CUT): P.CUT,
    (P.COMPLETED, E.CLEANED): P.CLOSED,
    (P.FAILED, E.CLEANED): P.CLOSED,
    (P.ABANDONED, E.CLEANED): P.CLOSED,
    (P.UNANSWERED, E.CLEANED): P.CLOSED,
    (P.CUT, E.CLEANED): P.CLOSED,
    (P.BROKEN, E.CLEANED): P.CLOSED,
}

# (stop-generating, drain, what the server stored)
EXPECTED_CLEANUP = {
    P.COMPLETED: (False, False, "reply"),
    P.FAILED: (False, False, None),
    P.ABANDONED: (False, False, None),
    P.UNANSWERED: (True, False, None),
    P.CUT: (True, True, "partial"),
    P.BROKEN: (True, False, None),
}


def test_the_transition_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(Phase, Event)),
                         ids=lambda value: value.value)
def test_every_pair_of_phase_and_event(phase: Phase, event: Event) -> None:
    turn = Turn(FakeTransport(), model="m", build=BUILD)
    turn.phase = phase
    if (phase, event) in EXPECTED:
        assert turn.fire(event) is EXPECTED[phase, event]
    else:
        with pytest.raises(RuntimeError, match=f"phase {phase.value} cannot take {event.value}"):
            turn.fire(event)
        assert turn.phase is phase


@pytest.mark.parametrize("phase", list(EXPECTED_CLEANUP), ids=lambda value: value.value)
def test_each_ended_phase_has_its_cleanup(phase: Phase) -> None:
    cleanup = CLEANUP[phase]
    assert (cleanup.stop, cleanup.drain, cleanup.stored) == EXPECTED_CLEANUP[phase]
    assert (phase, Event.CLEANED) in TRANSITIONS


def test_every_phase_is_reachable_from_new_and_ends_closed() -> None:
    reached = {Phase.NEW}
    frontier = [Phase.NEW]
    while frontier:
        phase = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is phase and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(Phase)
    ended = {phase for phase in Phase if (phase, Event.CLEANED) in TRANSITIONS}
    assert ended == set(CLEANUP)


def BUILD(family: Family) -> tuple[Prompt, str | None]:
    return Prompt("hi"), None


class FakeTransport:
    """Records the turn's requests; each step's behaviour is set per test."""

    model = "m"

    def __init__(self, *, create: Any = "c1", prompt: Any = None, cleanup: Any = None, protocol: str = "0.4") -> None:
        from h2o_sdk import Timeout

        self.timeout = Timeout(cleanup=2)
        self._family = FAMILIES[protocol]
        self.read: list[str] = []
        self.sent: list[tuple[str, str]] = []
        self._create, self._prompt, self._cleanup = create, prompt, cleanup
        self.tracked: set[Turn] = set()
        self.deferred: list[str] = []

    def check_open(self) -> None:
        pass

    def track(self, turn: Turn) -> None:
        self.tracked.add(turn)

    def untrack(self, turn: Turn) -> None:
        self.tracked.discard(turn)

    def accept_settings(self, abort: Abort) -> None:
        pass

    def family(self, abort: Abort) -> Family:
        return self._family

    def leaf(self, conversation_id: str, abort: Abort) -> str:
        self.sent.append(("GET", f"/conversation/{conversation_id}/__data.json"))
        return "root"

    def read_back(self, conversation_id: str, deadline: float) -> list[dict[str, str]] | None:
        self.read.append(conversation_id)
        return [{"role": "system", "content": "", "id": "root"}]

    def take_spare(self, model: str) -> str | None:
        return None

    def refill(self, after: Any) -> None:
        pass

    def create_conversation(self, model: str, abort: Abort, preprompt: str | None = None) -> str:
        self.sent.append(("POST", "/conversation"))
        if isinstance(self._create, BaseException):
            raise self._create
        return str(self._create)

    def open_prompt(self, conversation_id: str, prompt: Prompt, abort: Abort) -> Any:
        self.sent.append(("POST", f"/conversation/{conversation_id}"))
        if isinstance(self._prompt, BaseException):
            raise self._prompt
        return FakeBody()

    def cleanup_request(self, method: str, path: str, deadline: float, json_body: Any = None) -> None:
        self.sent.append((method, path))
        if isinstance(self._cleanup, BaseException):
            raise self._cleanup

    def reattach(self, conversation_id: str, generation_id: str, seen: int, abort: Any) -> None:
        return None  # no chat-ui HEAD here

    def defer(self, conversation_id: str, steps: Any) -> None:
        # The client's Cleaner runs these in the background; here, at once and in order.
        self.deferred.append(conversation_id)
        run_steps(self, conversation_id, steps, time.monotonic() + 2)


class FakeBody:
    sock = None
    closed: bool | None = None

    def chunks(self) -> Any:
        return iter(())

    def set_deadline(self, deadline: float) -> None:
        pass

    def close(self, *, reuse: bool) -> None:
        self.closed = reuse


STOP = ("POST", "/conversation/c1/stop-generating")
DELETE = ("DELETE", "/conversation/c1")
CREATE = ("POST", "/conversation")
PROMPT = ("POST", "/conversation/c1")


@pytest.mark.parametrize(
    ("failure", "requests"),
    [
        (APIStatusError("no", status_code=422), [CREATE, PROMPT, DELETE]),  # FAILED: no stop
        (APIConnectionError("refused", connect=True), [CREATE, PROMPT, DELETE]),  # FAILED
        (APIConnectionError("reset"), [CREATE, PROMPT, STOP, DELETE]),  # UNANSWERED: it may be generating
        (APITimeoutError("silent"), [CREATE, PROMPT, STOP, DELETE]),  # UNANSWERED
        (KeyboardInterrupt(), [CREATE, PROMPT, STOP, DELETE]),  # UNANSWERED
    ],
    ids=["status", "connect", "reset", "read-timeout", "ctrl-c"],
)
def test_a_failed_prompt_is_cleaned_up_before_the_error_propagates(
    failure: BaseException, requests: list[tuple[str, str]]
) -> None:
    transport = FakeTransport(prompt=failure)
    turn = Turn(transport, model="m", build=BUILD)
    with pytest.raises(type(failure)):
        turn.open()
    assert transport.sent == requests
    assert turn.phase is Phase.CLOSED and turn.done.is_set() and not transport.tracked


@pytest.mark.parametrize(
    ("failure", "requests"),
    [(APIStatusError("bad model", status_code=500), [CREATE]), (APIConnectionError("reset"), [CREATE])],
    ids=["status", "lost"],
)
def test_a_failed_create_sends_nothing_more(failure: BaseException, requests: list[tuple[str, str]]) -> None:
    transport = FakeTransport(create=failure)
    turn = Turn(transport, model="m", build=BUILD)
    with pytest.raises(type(failure)):
        turn.open()
    assert transport.sent == requests and turn.phase is Phase.CLOSED


def test_an_abort_before_open_sends_nothing() -> None:
    transport = FakeTransport()
    turn = Turn(transport, model="m", build=BUILD)
    assert turn.abort() is True
    with pytest.raises(IncompleteStreamError, match="aborted"):
        turn.open()
    assert transport.sent == [] and turn.phase is Phase.CLOSED


def test_an_abort_during_the_create_lets_it_finish_then_deletes_it() -> None:
    transport = FakeTransport()
    turn = Turn(transport, model="m", build=BUILD)

    def create(model: str, abort: Abort, preprompt: str | None = None) -> str:
        assert turn.abort() is False  # the create is not cut: it finishes in the background
        return "c1"

    transport.create_conversation = create  # type: ignore[method-assign]
    with pytest.raises(IncompleteStreamError, match="aborted"):
        turn.open()
    assert transport.sent == [DELETE] and turn.phase is Phase.CLOSED


@pytest.mark.parametrize(
    ("event", "requests", "stored", "drained"),
    [
        ("final", [DELETE], "reply", False),
        ("refused", [DELETE], None, False),
        ("lost", [STOP, DELETE], None, False),
        ("cut", [STOP, DELETE], "partial", False),  # a one-shot turn never drains
    ],
)
def test_finish_of_a_one_shot_turn(event: str, requests: list[tuple[str, str]], stored: str | None,
                                   drained: bool) -> None:
    transport = FakeTransport()
    turn = Turn(transport, model="m", build=BUILD)
    body = turn.open()
    seen: list[bool] = []
    assert turn.finish(event, lambda: seen.append(True)) == stored
    assert transport.sent[2:] == requests and bool(seen) is drained
    assert transport.deferred == ["c1"]  # all of a one-shot turn's cleanup is off the caller's path
    assert body.closed is (event == "final")  # only a finished body goes back to the pool


class FakeOwner:
    def __init__(self, conversation_id: str | None = None, *, closed: bool = False) -> None:
        self.id = conversation_id
        self.closed = closed
        self.turns = 0

    def _server_id(self) -> str | None:
        return self.id

    def _turn_created(self, conversation_id: str) -> bool:
        self.id = conversation_id
        return not self.closed

    def _turn_begins(self) -> None:
        self.turns += 1

    def _turn_ends(self) -> None:
        self.turns -= 1


def test_a_conversation_turn_drains_after_a_cut_and_never_deletes() -> None:
    transport = FakeTransport()
    owner = FakeOwner("c1")
    turn = Turn(transport, model="m", build=BUILD, owner=owner, keep_partial=True)
    turn.open()
    assert owner.turns == 1
    seen: list[bool] = []
    assert turn.finish("cut", lambda: seen.append(True)) == "partial"
    assert transport.sent == [PROMPT, STOP] and seen == [True] and owner.turns == 0


def test_a_conversation_closed_while_its_first_turn_created_it_is_deleted() -> None:
    transport = FakeTransport()
    turn = Turn(transport, model="m", build=BUILD, owner=FakeOwner(closed=True), keep_partial=True)
    with pytest.raises(ValueError, match="closed"):
        turn.open()
    assert transport.sent == [CREATE, DELETE]


def test_failed_cleanup_requests_are_logged_and_the_turn_still_closes(caplog: pytest.LogCaptureFixture) -> None:
    transport = FakeTransport(cleanup=APIConnectionError("down"))
    turn = Turn(transport, model="m", build=BUILD)
    turn.open()
    assert turn.finish("cut", None) == "partial"
    assert turn.phase is Phase.CLOSED and "could not delete conversation c1" in caplog.text
