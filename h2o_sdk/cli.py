"""The ``h2o-chat`` command: stream a reply to the terminal, or run the local server.

Usage::

    h2o-chat "Write a haiku about rivers"            # the hosted service (or $H2O_SDK_BASE_URL)
    h2o-chat --local "Write a haiku about rivers"    # the embedded local emulator
    echo "Summarise this" | h2o-chat --local         # the prompt from standard input
    h2o-chat serve --port 8080                       # run the emulator until Ctrl-C

Exit status: 0 on success, 1 on an error (one line on stderr), 2 on a usage
error, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from . import H2oError, __version__
from ._client import Client
from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL

__all__ = ["main"]

_EXAMPLES = """examples:
  h2o-chat --local "Write a haiku about rivers"
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
    parser.add_argument("prompt", nargs="?", help="the prompt; read from standard input when omitted")
    parser.add_argument("--local", action="store_true", help="start the embedded local emulator and use it")
    parser.add_argument("--base-url", default=os.environ.get("H2O_SDK_BASE_URL", DEFAULT_BASE_URL),
                        help="the service's URL (default: $H2O_SDK_BASE_URL or %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model id (default: %(default)s)")
    parser.add_argument("--proxy", help="a proxy URL for every request")
    parser.add_argument("--timeout", type=float, help="connect and idle read timeout, in seconds")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--max-new-tokens", type=int, help="the longest reply, in tokens")
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
    parser = _chat_parser()
    options = parser.parse_args(args)
    prompt = options.prompt
    if prompt is None:
        if stdin.isatty():
            parser.print_usage(stderr)
            print("h2o-chat: error: give a prompt (the interactive mode is not there yet)", file=stderr)
            return 2
        prompt = stdin.read()
    try:
        with _base_url(options) as base_url, _client(base_url, options) as client:
            parameters = {}
            if options.temperature is not None:
                parameters["temperature"] = options.temperature
            if options.max_new_tokens is not None:
                parameters["max_new_tokens"] = options.max_new_tokens
            with client.stream(prompt, model=options.model, **parameters) as stream:
                for text in stream:
                    stdout.write(text)
                    stdout.flush()
            stdout.write("\n")
    except KeyboardInterrupt:
        stdout.write("\n")
        return 130
    except (H2oError, ValueError, TypeError) as exc:
        if options.debug:
            raise
        print(f"h2o-chat: error: {exc}", file=stderr)
        return 1
    return 0


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
