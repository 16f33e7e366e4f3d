"""The h2o-chat command as a person uses it: options, --json, and the interactive mode in a real terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pexpect
import pytest

from h2o_sdk.cli import main
from h2o_sdk.testing import ChatServer, default_reply

from .helpers import numbered_server


@pytest.fixture
def server() -> Iterator[ChatServer]:
    yield from numbered_server(" is here, one two three four.")


def test_json_prints_one_object_per_token_and_the_reply(server: ChatServer,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base-url", server.url, "--json", "Hi"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    *tokens, final = lines
    assert all(t["type"] == "token" and set(t) == {"type", "id", "text", "logprob", "special"} for t in tokens)
    assert tokens[-1]["special"] is True
    assert final["type"] == "reply" and final["finish_reason"] == "eos_token"
    assert final["text"] == "".join(t["text"] for t in tokens if not t["special"])


def test_stop_and_max_new_tokens(server: ChatServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base-url", server.url, "--stop", "three", "Hi"]) == 0
    assert capsys.readouterr().out == "Answer number 1 is here, one two three\n"
    assert main(["--base-url", server.url, "--max-new-tokens", "2", "Hi"]) == 0
    assert capsys.readouterr().out == "Answer number\n"


def test_environment_base_url_and_version(server: ChatServer, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H2O_SDK_BASE_URL", server.url)
    assert main(["Hi"]) == 0
    assert capsys.readouterr().out.startswith("Answer number 1")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("h2o-chat 0.")


def spawn(*args: str) -> pexpect.spawn:
    """``python -m h2o_sdk ARGS`` in a real pseudo-terminal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
    return pexpect.spawn(sys.executable, ["-m", "h2o_sdk", *args], env=env, encoding="utf-8", timeout=30,
                         dimensions=(40, 200))


def test_interactive_chat_in_a_terminal(server: ChatServer) -> None:
    child = spawn("--base-url", server.url)
    try:
        child.expect("/retry regenerates")
        child.expect("you> ")
        child.sendline("Hello there")
        child.expect("Answer number 1 is here, one two three four.")
        child.expect("you> ")
        child.sendline("/retry")
        child.expect("Answer number 2 is here")
        child.expect("you> ")
        server.pace = 0.5  # a slow reply, stopped with Ctrl-C
        child.sendline("Tell me a long story")
        child.expect("Answer")
        child.sendintr()
        child.expect(r"\(stopped\)")
        child.expect("you> ")
        server.pace = 0
        child.sendline("And now?")  # the session survived Ctrl-C
        child.expect("Answer number 4 is here")
        child.expect("you> ")
        child.sendline("/new")
        child.expect("a new conversation")
        child.expect("you> ")
        child.sendline("Fresh start")
        child.expect("Answer number 5")
        child.expect("you> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    steps = [(method, path.count("/")) for method, path in server.paths()]
    assert steps.count(("POST", 1)) == 2 + 1  # settings, then two conversations (one after /new)
    assert ("POST", 3) in steps  # stop-generating after Ctrl-C


def test_interactive_exit_command(server: ChatServer) -> None:
    child = spawn("--base-url", server.url)
    try:
        child.expect("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_ctrl_c_during_a_one_shot_reply_exits_130_and_cleans_up(server: ChatServer) -> None:
    server.pace = 0.5
    child = spawn("--base-url", server.url, "Tell me a story")
    try:
        child.expect("Answer")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in (child.before or "")
    assert [method for method, _ in server.paths()][-2:] == ["POST", "DELETE"]  # stop-generating, then delete


def test_serve_runs_the_emulator_until_ctrl_c() -> None:
    from h2o_sdk import Client

    child = spawn("serve", "--port", "0", "--pace", "0")
    try:
        child.expect(r"on (http://127\.0\.0\.1:\d+)")
        url = child.match.group(1)
        with Client(url) as client:
            expected = default_reply("<|prompt|>Hi<|endoftext|><|answer|>")
            assert client.chat("Hi").text == expected
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
