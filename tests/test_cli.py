"""The h2o-chat command as a person uses it: options, --json, and the interactive mode in a real terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

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


# -- issue 11, items 16-20 -----------------------------------------------------------------------


def test_a_closed_stdout_ends_quietly_and_the_conversation_is_deleted(server: ChatServer) -> None:
    import subprocess

    server.reply = " ".join(f"line{i}\n" for i in range(2000))
    server.pace = 0.001
    command = f"{sys.executable} -m h2o_sdk --base-url {server.url} Hi | head -c 20"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "line0\n line1\n line2\n"[:20]
    assert done.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert done.returncode == 141
    assert server.live_conversations == 0 and server.paths()[-1][0] == "DELETE"


def test_an_error_after_part_of_a_reply_starts_on_a_new_line(server: ChatServer,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from h2o_sdk.testing import Fault

    server.inject(Fault(error_after=2))
    assert main(["--base-url", server.url, "Hi"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "Answer number\n"
    assert captured.err.startswith("h2o-chat: error: Request failed during generation")


def test_with_json_an_error_is_also_an_object_on_stdout(server: ChatServer,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from h2o_sdk.testing import Fault

    server.inject(Fault(error_after=2))
    assert main(["--base-url", server.url, "--json", "Hi"]) == 1
    *tokens, error = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["type"] for t in tokens] == ["token", "token"]
    assert error["type"] == "error" and error["error"] == "GenerationError" and error["text"] == "Answer number"
    server.inject(Fault(step="create", status=404))
    assert main(["--base-url", server.url, "--json", "Hi"]) == 1
    (error,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert error["error"] == "NotFoundError" and error["status_code"] == 404


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "inf", "Hi"], "--timeout"),
        (["--timeout", "-1", "Hi"], "--timeout"),
        (["--timeout", "soon", "Hi"], "--timeout"),
        (["--temperature", "nan", "Hi"], "--temperature"),
        (["--max-new-tokens", "0", "Hi"], "--max-new-tokens"),
        (["--ca-bundle", "/nonexistent/ca.pem", "Hi"], "--ca-bundle"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--pace", "-1"], "--pace"),
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("host", ["in-use", "203.0.113.1", "no such host name"])
def test_serve_where_it_cannot_listen_is_a_usage_error(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    from h2o_sdk.testing import serve

    with serve() as busy:
        port = busy.url.rsplit(":", 1)[1]
        args = ["serve", "--port", port] if host == "in-use" else ["serve", "--host", host, "--port", "0"]
        assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot listen on" in err and "Traceback" not in err


def test_ca_bundle_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import ssl

    import trustme

    from h2o_sdk.testing import serve

    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with serve(pace=0, ssl_context=context) as server:
        assert main(["--base-url", server.url, "--ca-bundle", str(bundle), "Hi"]) == 0
        monkeypatch.setenv("H2O_SDK_CA_BUNDLE", str(bundle))
        assert main(["--base-url", server.url, "Hi"]) == 0
        assert server.live_conversations == 0


def test_an_unknown_model_is_named(server: ChatServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base-url", server.url, "--model", "no/such-model", "Hi"]) == 1
    err = capsys.readouterr().err
    assert "'no/such-model'" in err and "Internal Error" in err


def test_the_offline_default_service_says_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:  # never touch the network: the DNS lookup fails
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("H2O_SDK_BASE_URL", raising=False)
    assert main(["--timeout", "2", "Hi"]) == 1
    err = capsys.readouterr().err
    assert "offline since 2023" in err and "--base-url" in err and "--local" in err


def test_the_connection_is_made_while_the_prompt_is_read(server: ChatServer,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import time

    seen_before_read: list[bool] = []

    class SlowStdin(io.StringIO):
        def isatty(self) -> bool:
            return False

        def read(self, size: int | None = -1) -> str:
            end = time.monotonic() + 10
            while not server.paths() and time.monotonic() < end:  # the pipe is still filling
                time.sleep(0.01)
            while ("POST", "/settings") not in server.paths() and time.monotonic() < end:  # after detection
                time.sleep(0.01)
            seen_before_read.append(("POST", "/settings") in server.paths())
            return "Hi"

    assert main(["--base-url", server.url], stdin=SlowStdin()) == 0
    assert seen_before_read == [True]  # the welcome modal was accepted while the prompt was on its way
    assert capsys.readouterr().out.startswith("Answer number 1")


def test_an_unknown_command_is_an_error_that_lists_the_commands_and_sends_nothing(server: ChatServer) -> None:
    child = spawn("--base-url", server.url)
    try:
        child.expect("you> ")
        child.sendline("/retyr")
        child.expect("unknown command /retyr; the commands are /new, /retry")
        child.expect("you> ")
        child.sendline("//etc is a path")  # a line that begins with / goes with //
        child.expect("Answer number 1")
        child.expect("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    prompts = [p for m, p in server.paths() if m == "POST" and p.count("/") == 2]
    assert len(prompts) == 1  # only the // line reached the model


def test_every_json_error_object_carries_every_documented_key(server: ChatServer,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from h2o_sdk.testing import Fault

    server.inject(Fault(step="create", status=404))
    assert main(["--base-url", server.url, "--json", "Hi"]) == 1
    (error,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert error == {"type": "error", "error": "NotFoundError", "message": error["message"], "status_code": 404,
                     "text": None}
    assert main(["--base-url", "http://127.0.0.1:9", "--json", "--timeout", "1", "Hi"]) == 1
    (error,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(error) == {"type", "error", "message", "status_code", "text"}
    assert error["status_code"] is None and error["text"] is None


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com", "http://", "http://h/x?y=1"])
def test_a_bad_base_url_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base-url", url, "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: h2o-chat") and "base_url" in err


def test_serve_refuses_an_upstream_that_cannot_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--protocol", "0.10", "--upstream", "ftp://127.0.0.1:9/v1"]) == 2
    assert "usage: h2o-chat serve" in capsys.readouterr().err


def test_list_continue_and_a_system_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    from h2o_sdk import Client
    from h2o_sdk.testing import serve

    with serve(protocol="0.10", pace=0) as server:
        session = ["--base-url", server.url, "--cookie", "hf-chat=cli-session"]
        with Client(server.url, cookies={"hf-chat": "cli-session"}) as client, \
                client.conversation(keep=True) as conversation:
            conversation.chat("Name a river.")
            conversation_id = conversation.id
        assert conversation_id is not None
        capsys.readouterr()
        assert main([*session, "--list"]) == 0
        assert capsys.readouterr().out.startswith(f"{conversation_id}  ")
        assert main([*session, "--list", "--json"]) == 0
        (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert listed["id"] == conversation_id and listed["type"] == "conversation"
        assert main([*session, "--conversation", conversation_id, "And a longer one?"]) == 0
        stored = server.conversation(conversation_id)
        assert stored is not None and [m["content"] for m in stored["messages"]][2] == "And a longer one?"
        assert main([*session, "--system", "Answer in French.", "Hi"]) == 0
        assert main([*session, "--conversation", conversation_id, "--system", "x", "Hi"]) == 2
        with Client(server.url, cookies={"hf-chat": "cli-session"}) as client:
            assert client.delete_conversations() == 1  # the --system chat was a one-shot, deleted
    capsys.readouterr()


def test_interactive_history_and_title(server: ChatServer) -> None:
    child = spawn("--base-url", server.url)
    try:
        child.expect("you> ")
        child.sendline("Hello there")
        child.expect("Answer number 1")
        child.expect("you> ")
        child.sendline("/history")
        child.expect("user> Hello there")
        child.expect("you> ")
        child.sendline("/title Rivers")
        child.expect("Rivers")
        child.expect("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_web_search_and_files_from_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from h2o_sdk.testing import serve

    notes = tmp_path / "notes.txt"
    notes.write_text("the Nile")
    with serve(protocol="0.9", pace=0) as server:
        assert main(["--base-url", server.url, "--web-search", "--file", str(notes), "Longest river?"]) == 0
        out = capsys.readouterr().out
        source = "Longest river? - Example Encyclopedia <https://example.com/wiki/Longest%20river%3F>"
        assert f"Sources:\n  {source}\n" in out
        assert main(["--base-url", server.url, "--web-search", "--json", "Longest river?"]) == 0
        final = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert final["sources"][0]["url"] == "https://example.com/wiki/Longest%20river%3F"
        assert server.live_conversations == 0
        from h2o_sdk import Client

        with Client(server.url, cookies={"hf-chat": "cli-files"}) as client, \
                client.conversation(keep=True) as conversation:
            conversation.chat("Hi")
        assert conversation.id is not None
        assert main(["--base-url", server.url, "--cookie", "hf-chat=cli-files", "--conversation", conversation.id,
                     "--file", str(notes), "Read it"]) == 0
        stored = server.conversation(conversation.id)
        assert stored is not None and stored["messages"][-2]["files"][0]["name"] == "notes.txt"
    with serve(pace=0) as server:  # 0.4: no web search there
        assert main(["--base-url", server.url, "--web-search", "Hi"]) == 2
        assert "web-search" in capsys.readouterr().err
        assert main(["--base-url", server.url, "--file", str(tmp_path / "missing.txt"), "Hi"]) == 1
        assert "cannot read the file" in capsys.readouterr().err


def test_interactive_edit() -> None:
    from h2o_sdk.testing import serve

    with serve(protocol="0.8", pace=0, reply=lambda prompt: "Reply to " + prompt.split("user\n")[-1].split("<")[0]) \
            as server:
        child = spawn("--base-url", server.url)
        try:
            child.expect("you> ")
            child.sendline("Hello there")
            child.expect("Reply to Hello there")
            child.expect("you> ")
            child.sendline("/edit 1 Good morning")
            child.expect("Reply to Good morning")
            child.expect("you> ")
            child.sendline("/history")
            child.expect("1 user> Good morning")
            child.expect("2 assistant> Reply to Good morning")
            child.expect("you> ")
            child.sendline("/edit 2 not mine")
            child.expect("only a user message can be edited")
            child.expect("you> ")
            child.sendline("/edit x")
            child.expect("/edit N TEXT")
            child.expect("you> ")
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0
        assert server.live_conversations == 0
