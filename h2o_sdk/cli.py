"""The ``h2o-chat`` command: stream a reply to the terminal, or run the local server.

Usage::

    h2o-chat "Write a haiku about rivers"            # the hosted service (or $H2O_SDK_BASE_URL)
    h2o-chat --local "Write a haiku about rivers"    # the embedded local emulator
    h2o-chat --local                                 # an interactive chat on a terminal
    echo "Summarise this" | h2o-chat --local         # the prompt from standard input
    h2o-chat serve --port 8080                       # run the emulator until Ctrl-C

Exit status: 0 on success, 1 on an error (one line on stderr), 2 on a usage
error, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from . import H2oError, __version__
from ._client import Client
from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL
from ._stream import Stream

__all__ = ["main"]

_EXAMPLES = """examples:
  h2o-chat --local "Write a haiku about rivers"
  h2o-chat --local                                 # an interactive chat (/new, /retry, /exit)
  h2o-chat --local --json "Hi" | jq -c .
  echo "Explain SSE in one line" | h2o-chat --local
  H2O_SDK_BASE_URL=http://127.0.0.1:8080 h2o-chat "Hi"
  h2o-chat serve --port 8080
"""


def _chat_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2o-chat",
        description="Stream an h2oGPT reply to the terminal. 'h2o-chat serve --help' runs the local emulator.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="?",
                        help="the prompt; read from standard input when piped; a chat session on a terminal")
    parser.add_argument("--local", action="store_true", help="start the embedded local emulator and use it")
    parser.add_argument("--base-url", default=os.environ.get("H2O_SDK_BASE_URL", DEFAULT_BASE_URL),
                        help="the service's URL (default: $H2O_SDK_BASE_URL or %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model id (default: %(default)s)")
    parser.add_argument("--proxy", help="a proxy URL for every request")
    parser.add_argument("--timeout", type=float, help="connect and idle read timeout, in seconds")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--max-new-tokens", type=int, help="the longest reply, in tokens")
    parser.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per token, then one with the reply's details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="h2o-chat serve", description="Run the local h2oGPT chat emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind, 0 for any (default: %(default)s)")
    parser.add_argument("--pace", type=float, default=0.03, help="seconds between tokens (default: %(default)s)")
    parser.add_argument("--secure-cookie", action="store_true", help="mark the session cookie Secure, as production")
    parser.add_argument("--no-welcome", action="store_true", help="do not require the welcome modal")
    return parser


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if args[:1] == ["serve"]:
        return _serve(_serve_parser().parse_args(args[1:]), stdout)
    options = _chat_parser().parse_args(args)
    interactive = options.prompt is None and stdin.isatty()
    try:
        with _base_url(options) as base_url, _client(base_url, options) as client:
            if interactive:
                return _interactive(client, options, stdout, stderr)
            prompt = options.prompt if options.prompt is not None else stdin.read()
            with client.stream(prompt, model=options.model, **_parameters(options)) as stream:
                _print_stream(stream, options, stdout)
    except KeyboardInterrupt:
        stdout.write("\n")
        return 130
    except (H2oError, ValueError, TypeError) as exc:
        if options.debug:
            raise
        print(f"h2o-chat: error: {exc}", file=stderr)
        return 1
    return 0


def _parameters(options: argparse.Namespace) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if options.temperature is not None:
        parameters["temperature"] = options.temperature
    if options.max_new_tokens is not None:
        parameters["max_new_tokens"] = options.max_new_tokens
    if options.stop:
        parameters["stop"] = options.stop
    if options.json:
        parameters["details"] = True  # so the final object has finish_reason
    return parameters


def _print_stream(stream: Stream, options: argparse.Namespace, stdout: TextIO) -> None:
    """Write a reply as it arrives: text, or with --json one object per token and one for the reply."""
    if not options.json:
        for text in stream:
            stdout.write(text)
            stdout.flush()
        stdout.write("\n")
        return
    for token in stream.tokens():
        event = {"type": "token", "id": token.id, "text": token.text, "logprob": token.logprob,
                 "special": token.special}
        stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        stdout.flush()
    reply = stream.reply
    if reply is not None:
        final = {"type": "reply", "text": reply.text, "finish_reason": reply.finish_reason,
                 "generated_tokens": reply.generated_tokens, "conversation_id": reply.conversation_id}
        stdout.write(json.dumps(final, ensure_ascii=False) + "\n")
        stdout.flush()


_HELP = "/new starts a new conversation, /retry regenerates the last reply, /exit or Ctrl-D leaves; " \
        "Ctrl-C stops a reply."


def _interactive(client: Client, options: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Chat in one Conversation until /exit or Ctrl-D."""
    parameters = _parameters(options)
    print(f"h2o-chat {__version__} on {client.base_url} ({options.model})\n{_HELP}", file=stdout, flush=True)
    conversation = client.conversation(model=options.model, **parameters)
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                stdout.write("\n")
                return 0
            except KeyboardInterrupt:
                stdout.write("\n")
                continue
            command = line.strip()
            if not command:
                continue
            if command in ("/exit", "/quit"):
                return 0
            if command == "/help":
                print(_HELP, file=stdout)
                continue
            if command == "/new":
                conversation.close()
                conversation = client.conversation(model=options.model, **parameters)
                print("(a new conversation)", file=stdout, flush=True)
                continue
            try:
                stream = conversation.retry_stream() if command == "/retry" else conversation.stream(line)
                with stream:
                    _print_stream(stream, options, stdout)
            except KeyboardInterrupt:
                stdout.write("\n(stopped)\n")
                stdout.flush()
            except (H2oError, ValueError) as exc:
                if options.debug:
                    raise
                print(f"h2o-chat: error: {exc}", file=stderr, flush=True)
    finally:
        conversation.close()


def _client(base_url: str, options: argparse.Namespace) -> Client:
    if options.timeout is None:
        return Client(base_url, model=options.model, proxy=options.proxy)
    return Client(base_url, model=options.model, proxy=options.proxy, timeout=options.timeout)


@contextlib.contextmanager
def _base_url(options: argparse.Namespace) -> Iterator[str]:
    if not options.local:
        yield options.base_url
        return
    from .testing import serve

    with serve(models=(options.model,)) as server:
        yield server.url


def _serve(options: argparse.Namespace, stdout: TextIO) -> int:
    from .testing import ChatServer

    server = ChatServer(options.host, options.port, pace=options.pace, secure_cookie=options.secure_cookie,
                        require_welcome=not options.no_welcome)
    print(f"h2o-chat: serving the local h2oGPT emulator on {server.url} (Ctrl-C stops)", file=stdout, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
