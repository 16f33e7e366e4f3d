"""The ``h2o-chat`` command: stream a reply to the terminal, or run the local server.

Usage::

    h2o-chat "Write a haiku about rivers"            # the hosted service (or $H2O_SDK_BASE_URL)
    h2o-chat --local "Write a haiku about rivers"    # the embedded local emulator
    h2o-chat --local                                 # an interactive chat on a terminal
    echo "Summarise this" | h2o-chat --local         # the prompt from standard input
    h2o-chat serve --port 8080                       # run the emulator until Ctrl-C

Exit status: 0 on success, 1 on an error (one line on stderr), 2 on a usage
error, 130 after Ctrl-C, 141 when standard output was closed (``| head``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from . import APIStatusError, H2oError, StreamError, UnsupportedError, __version__
from ._client import Client
from ._http import check_base_url, is_loopback
from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, PROTOCOLS
from ._stream import Stream
from ._types import MAX_TIMEOUT

__all__ = ["main"]

_EXAMPLES = """examples:
  h2o-chat --local "Write a haiku about rivers"
  h2o-chat --local                                 # an interactive chat (/new, /retry, /exit)
  h2o-chat --local --json "Hi" | jq -c .
  echo "Explain SSE in one line" | h2o-chat --local
  H2O_SDK_BASE_URL=http://127.0.0.1:8080 h2o-chat "Hi"
  h2o-chat serve --port 8080
"""


def _value(convert: Callable[[str], Any], valid: Callable[[Any], bool], kind: str, rule: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text, then insist on ``valid`` (a usage error otherwise)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
        return value

    return parse


_seconds = _value(float, lambda v: math.isfinite(v) and 0 < v <= MAX_TIMEOUT, "a number of seconds",
                  f"above 0 and at most {MAX_TIMEOUT:g} seconds")
_finite = _value(float, math.isfinite, "a number", "a finite number")
_pace = _value(float, lambda v: math.isfinite(v) and v >= 0, "a number of seconds", "0 or more seconds")
_positive = _value(int, lambda v: v >= 1, "a whole number", "1 or more")
_port = _value(int, lambda v: 0 <= v <= 65535, "a port number", "from 0 to 65535")


def _cookie(text: str) -> tuple[str, str]:
    name, sep, value = text.strip().partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError("must be NAME=VALUE")  # the value is a credential: not shown
    return name.strip(), value.strip()


def _env_cookies() -> list[tuple[str, str]]:
    cookies = []
    for part in os.environ.get("H2O_SDK_COOKIES", "").split(";"):
        if part.strip():
            name, sep, value = part.strip().partition("=")
            if sep and name.strip():
                cookies.append((name.strip(), value.strip()))
    return cookies


def _ca_bundle(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file or directory: {text!r}")
    return text


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
    parser.add_argument("--model", help=f"the model id (default: {DEFAULT_MODEL}, or the server's first if it lists "
                                        "models without that one)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                        help="the chat-ui protocol family to speak (default: detect it); with --local, the one "
                             "the local server speaks (default there: 0.4)")
    parser.add_argument("--cookie", action="append", type=_cookie, metavar="NAME=VALUE", default=[],
                        help="a cookie of a logged-in session, sent with every request (repeatable; also "
                             "H2O_SDK_COOKIES='NAME=VALUE; NAME=VALUE')")
    parser.add_argument("--proxy", help="a proxy URL for every request")
    parser.add_argument("--ca-bundle", type=_ca_bundle, default=os.environ.get("H2O_SDK_CA_BUNDLE") or None,
                        metavar="PATH", help="trust this CA bundle (file or directory), for a server with a "
                        "private CA (default: $H2O_SDK_CA_BUNDLE)")
    parser.add_argument("--timeout", type=_seconds, help="connect and idle read timeout, in seconds")
    parser.add_argument("--temperature", type=_finite, help="sampling temperature")
    parser.add_argument("--max-new-tokens", type=_positive, help="the longest reply, in tokens")
    parser.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per token, then one with the reply's details")
    parser.add_argument("--list", action="store_true",
                        help="list the session's conversations on the server (newest first) and exit")
    parser.add_argument("--conversation", metavar="ID",
                        help="continue this conversation of the session (it is kept on the server)")
    parser.add_argument("--system", metavar="TEXT", help="a system prompt for a new conversation")
    parser.add_argument("--web-search", action="store_true",
                        help="let the server search the web first (chat-ui 0.7 to 0.9); the sources follow the reply")
    parser.add_argument("--file", action="append", metavar="PATH", default=[],
                        help="attach a file to the (first) message, chat-ui 0.7 on (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="h2o-chat serve", description="Run the local h2oGPT chat emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8080, help="port to bind, 0 for any (default: %(default)s)")
    parser.add_argument("--pace", type=_pace, default=0.03, help="seconds between tokens (default: %(default)s)")
    parser.add_argument("--secure-cookie", action="store_true", help="mark the session cookie Secure, as production")
    parser.add_argument("--no-welcome", action="store_true", help="do not require the welcome modal")
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help="the chat-ui family to emulate (default: 0.4); with --openai --base-url, the "
                             "server's (default: detect)")
    parser.add_argument("--upstream", metavar="URL",
                        help="a model server to put the local server in front of: a TGI URL (0.4: its "
                             "/generate_stream), or an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1")
    parser.add_argument("--upstream-api", choices=("tgi", "openai"),
                        help="the kind of model server (default: the family's own: tgi up to 0.9, openai for 0.10)")
    parser.add_argument("--upstream-key", default=os.environ.get("H2O_SDK_UPSTREAM_KEY") or None, metavar="KEY",
                        help="the model server's bearer token (default: $H2O_SDK_UPSTREAM_KEY)")
    gateway = parser.add_argument_group("the OpenAI-compatible gateway (pip install 'h2o_sdk[gateway]')")
    gateway.add_argument("--openai", action="store_true",
                         help="serve OpenAI's chat-completions API (/v1) in front of a chat-ui server")
    gateway.add_argument("--base-url", help="the chat-ui server behind the gateway")
    gateway.add_argument("--local", action="store_true", help="put the local emulator behind the gateway")
    gateway.add_argument("--cookie", action="append", type=_cookie, metavar="NAME=VALUE", default=[],
                         help="a cookie of a logged-in session (repeatable)")
    gateway.add_argument("--api-key", default=os.environ.get("H2O_SDK_GATEWAY_KEY") or None, metavar="KEY",
                         help="requests must carry 'Authorization: Bearer KEY' (default: $H2O_SDK_GATEWAY_KEY); "
                              "without one only loopback is served")
    gateway.add_argument("--lenient", action="store_true",
                         help="ignore sampling parameters the server cannot take, instead of a 400")
    gateway.add_argument("--keep-conversations", action="store_true",
                         help="never delete the conversations the gateway made")
    return parser


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin, stderr = stdin or sys.stdin, stderr or sys.stderr
    out = _Output(stdout or sys.stdout)
    try:
        if args[:1] == ["serve"]:
            return _serve(_serve_parser(), args[1:], out, stderr)
        return _chat(_chat_parser().parse_args(args), stdin, out, stderr)
    except BrokenPipeError:
        # The reader went away (``| head``): end quietly, as other tools do.
        # Further writes, and the interpreter's last flush, go nowhere.
        out.discard()
        return 141


def _chat(options: argparse.Namespace, stdin: TextIO, out: _Output, stderr: TextIO) -> int:
    interactive = options.prompt is None and stdin.isatty()
    try:
        with _base_url(options) as base_url, _usage_client(base_url, options, stderr) as client:
            if client is None:
                return 2
            if options.list:
                return _list(client, options, out)
            if options.conversation is not None and options.system is not None:
                _chat_parser().print_usage(stderr)
                print("h2o-chat: error: --system is for a new conversation; --conversation keeps its own",
                      file=stderr, flush=True)
                return 2
            if options.prompt is None:
                # The connection and the welcome modal while the person types (or the pipe fills).
                _connect_meanwhile(client)
            if interactive:
                return _interactive(client, options, out, stderr)
            parameters = _parameters(options, client)
            prompt = options.prompt if options.prompt is not None else stdin.read()
            extras = {"web_search": options.web_search, "files": options.file or None}
            if options.conversation is not None:
                with client.conversation(id=options.conversation, **parameters) as conversation, \
                        conversation.stream(prompt, **extras) as stream:
                    _print_stream(stream, options, out)
                return 0
            messages: Any = prompt
            if options.system is not None:
                messages = [{"role": "system", "content": options.system}, {"role": "user", "content": prompt}]
            with client.stream(messages, model=options.model, **extras, **parameters) as stream:
                _print_stream(stream, options, out)
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    except UnsupportedError as exc:
        print(f"h2o-chat: error: {exc}", file=stderr, flush=True)
        return 2  # a usage error: the option cannot work with this server
    except (H2oError, ValueError, TypeError) as exc:
        if options.debug:
            raise
        _report(exc, options, out, stderr)
        return 1
    return 0


def _list(client: Client, options: argparse.Namespace, out: _Output) -> int:
    """``--list``: one line per conversation (``--json``: one object), newest first."""
    for info in client.conversations():
        if options.json:
            out.write(json.dumps({"type": "conversation", "id": info.id, "title": info.title, "model": info.model,
                                  "updated_at": info.updated_at}, ensure_ascii=False) + "\n")
        else:
            out.write(f"{info.id}  {info.updated_at or '-':24}  {info.title}\n")
    out.flush()
    return 0


def _connect_meanwhile(client: Client) -> None:
    """``client.connect()`` in the background; a failure is the first request's to report."""

    def connect() -> None:
        with contextlib.suppress(H2oError, ValueError):
            client.connect()

    threading.Thread(target=connect, name="h2o-chat-connect", daemon=True).start()


def _report(exc: BaseException, options: argparse.Namespace, out: _Output, stderr: TextIO) -> None:
    """One line on stderr, after the part of a reply already printed; with --json also an object."""
    out.end_line()
    if options.json:
        # Every documented key, null where it does not apply.
        error: dict[str, Any] = {
            "type": "error", "error": type(exc).__name__, "message": str(exc),
            "status_code": exc.status_code if isinstance(exc, APIStatusError) else None,
            "text": exc.text if isinstance(exc, StreamError) and exc.text else None,
        }
        out.write(json.dumps(error, ensure_ascii=False) + "\n")
        out.flush()
    print(f"h2o-chat: error: {exc}", file=stderr, flush=True)


class _Output:
    """Standard output, remembering whether the last line is unfinished."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._mid_line = False

    def write(self, text: str) -> None:
        if text:
            self._stream.write(text)
            self._mid_line = not text.endswith("\n")

    def flush(self) -> None:
        self._stream.flush()

    def end_line(self) -> None:
        """Start a new line if a reply was cut mid-line (an error follows it)."""
        if self._mid_line:
            with contextlib.suppress(OSError, ValueError):
                self.write("\n")
                self.flush()

    def discard(self) -> None:
        stream = self._stream
        self._stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the command
        if stream is sys.__stdout__:
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def _parameters(options: argparse.Namespace, client: Client) -> dict[str, Any]:
    """The generation options given; ``UnsupportedError`` if the server's family takes none."""
    parameters: dict[str, Any] = {}
    if options.temperature is not None:
        parameters["temperature"] = options.temperature
    if options.max_new_tokens is not None:
        parameters["max_new_tokens"] = options.max_new_tokens
    if options.stop:
        parameters["stop"] = options.stop
    if not parameters and not options.json:
        return parameters
    protocol = client.detect_protocol()
    if protocol != "0.4":
        if parameters:
            names = ", ".join("--" + name.replace("_", "-") for name in parameters)
            raise UnsupportedError(f"{names}: {client.base_url} speaks chat-ui protocol {protocol}, where the "
                                   "server's model configuration decides generation parameters")
        return parameters
    if options.json:
        parameters["details"] = True  # so the final object has finish_reason
    return parameters


def _print_stream(stream: Stream, options: argparse.Namespace, stdout: _Output) -> None:
    """Write a reply as it arrives: text, or with --json one object per token and one for the reply."""
    if not options.json:
        for text in stream:
            stdout.write(text)
            stdout.flush()
        stdout.write("\n")
        if stream.reply is not None and stream.reply.sources:
            stdout.write("Sources:\n" + "".join(f"  {s['title'] or s['url']} <{s['url']}>\n"
                                                 for s in stream.reply.sources))
            stdout.flush()
        return
    for token in stream.tokens():
        event = {"type": "token", "id": token.id, "text": token.text, "logprob": token.logprob,
                 "special": token.special}
        stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        stdout.flush()
    reply = stream.reply
    if reply is not None:
        final = {"type": "reply", "text": reply.text, "finish_reason": reply.finish_reason,
                 "generated_tokens": reply.generated_tokens, "conversation_id": reply.conversation_id,
                 "sources": list(reply.sources)}
        stdout.write(json.dumps(final, ensure_ascii=False) + "\n")
        stdout.flush()


_COMMANDS = ("/new", "/retry", "/history", "/edit", "/title", "/help", "/exit", "/quit")
_HELP = "/new starts a new conversation, /retry regenerates the last reply, /history shows it (numbered), " \
        "/edit N TEXT replaces your message N and answers it anew (chat-ui 0.8 on), /title [NEW] shows or " \
        "renames it, /exit or Ctrl-D leaves; Ctrl-C stops a reply; start a line with // to send one that " \
        "begins with /."
_EDIT = re.compile(r"^/edit\s+(\d+)\s+(.+)$", re.S)
_COMMAND = re.compile(r"^/[A-Za-z][\w-]*$")


def _interactive(client: Client, options: argparse.Namespace, stdout: _Output, stderr: TextIO) -> int:
    """Chat in one Conversation until /exit or Ctrl-D."""
    parameters = _parameters(options, client)
    stdout.write(f"h2o-chat {__version__} on {client.base_url} ({options.model or client.model})\n{_HELP}\n")
    stdout.flush()
    if options.conversation is not None:
        conversation = client.conversation(id=options.conversation, **parameters)
        stdout.write(f"(continuing {conversation.title or conversation.id}: {len(conversation.history)} messages)\n")
    else:
        conversation = client.conversation(model=options.model, system_prompt=options.system, **parameters)
    files: list[str] | None = options.file or None
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
                stdout.write(_HELP + "\n")
                continue
            word = command.split(maxsplit=1)[0]
            if word == "/history":
                for number, message in enumerate(conversation.history, 1):
                    stdout.write(f"{number} {message['role']}> {message['content']}\n")
                stdout.flush()
                continue
            if word == "/edit":
                edit = _EDIT.match(command)
                if edit is None or int(edit.group(1)) < 1:
                    print("h2o-chat: /edit N TEXT: N is a message's number in /history", file=stderr, flush=True)
                    continue
                try:
                    with conversation.edit_stream(int(edit.group(1)) - 1, edit.group(2)) as stream:
                        _print_stream(stream, options, stdout)
                except KeyboardInterrupt:
                    stdout.write("\n(stopped)\n")
                except (H2oError, ValueError, IndexError) as exc:
                    _report(exc, options, stdout, stderr)
                stdout.flush()
                continue
            if word == "/title":
                new_title = command[len("/title"):].strip()
                try:
                    if new_title:
                        conversation.rename(new_title)
                    stdout.write(f"{conversation.title or '(no title yet)'}\n")
                except (H2oError, ValueError) as exc:
                    _report(exc, options, stdout, stderr)
                stdout.flush()
                continue
            if _COMMAND.match(word) and command not in _COMMANDS:
                # A mistyped command is not a prompt for the model.
                print(f"h2o-chat: unknown command {command.split()[0]}; the commands are {', '.join(_COMMANDS)} "
                      "(start a line with // to send one that begins with /)", file=stderr, flush=True)
                continue
            if command.startswith("//"):
                line = line.lstrip()[1:]
            if command == "/new":
                conversation.close()
                conversation = client.conversation(model=options.model, **parameters)
                stdout.write("(a new conversation)\n")
                stdout.flush()
                continue
            try:
                if command == "/retry":
                    stream = conversation.retry_stream()
                else:
                    stream = conversation.stream(line, web_search=options.web_search, files=files)
                    files = None  # --file goes with the first message
                with stream:
                    _print_stream(stream, options, stdout)
            except KeyboardInterrupt:
                stdout.write("\n(stopped)\n")
                stdout.flush()
            except (H2oError, ValueError, TypeError) as exc:
                if options.debug:
                    raise
                _report(exc, options, stdout, stderr)
    finally:
        conversation.close()


@contextlib.contextmanager
def _usage_client(base_url: str, options: argparse.Namespace, stderr: TextIO) -> Iterator[Client | None]:
    """The client, or ``None`` after a usage error for an option it cannot take (a bad --base-url)."""
    try:
        client = _client(base_url, options)
    except (ValueError, TypeError) as exc:
        _chat_parser().print_usage(stderr)
        print(f"h2o-chat: error: {exc}", file=stderr, flush=True)
        yield None
        return
    with client:
        yield client


def _client(base_url: str, options: argparse.Namespace) -> Client:
    extra: dict[str, Any] = {}
    if options.timeout is not None:
        extra["timeout"] = options.timeout
    if options.ca_bundle is not None:
        extra["verify"] = options.ca_bundle
    cookies = dict(_env_cookies() + options.cookie)  # the command line's win
    protocol = "auto" if options.local else options.protocol
    return Client(base_url, model=options.model, proxy=options.proxy, protocol=protocol, cookies=cookies or None,
                  **extra)


@contextlib.contextmanager
def _base_url(options: argparse.Namespace) -> Iterator[str]:
    if not options.local:
        yield options.base_url
        return
    from .testing import serve

    protocol = "0.4" if options.protocol == "auto" else options.protocol
    with serve(models=(options.model or DEFAULT_MODEL,), protocol=protocol) as server:
        yield server.url


def _serve(parser: argparse.ArgumentParser, args: list[str], stdout: _Output, stderr: TextIO) -> int:
    from .testing import ChatServer

    options = parser.parse_args(args)
    if options.openai:
        return _serve_openai(parser, options, stdout, stderr)
    if options.protocol == "auto" or options.base_url or options.cookie or options.local or "--api-key" in args:
        parser.print_usage(stderr)
        print("h2o-chat serve: error: --base-url, --local, --cookie, --api-key and --protocol auto go with --openai",
              file=stderr)
        return 2
    try:
        server = ChatServer(options.host, options.port, pace=options.pace, secure_cookie=options.secure_cookie,
                            require_welcome=not options.no_welcome, protocol=options.protocol or "0.4",
                            upstream=options.upstream, upstream_api=options.upstream_api,
                            upstream_key=options.upstream_key)
    except ValueError as exc:  # an upstream URL or kind the family cannot take
        parser.print_usage(stderr)
        print(f"h2o-chat serve: error: {exc}", file=stderr)
        return 2
    except OSError as exc:  # a port in use, an address this machine does not have, a bad host name
        parser.print_usage(stderr)
        print(f"h2o-chat serve: error: cannot listen on {options.host}:{options.port}: "
              f"{exc.strerror or exc}", file=stderr)
        return 2
    front = f" in front of {options.upstream} ({server.upstream_api})" if options.upstream else ""
    stdout.write(f"h2o-chat: serving the local chat-ui {server.protocol} emulator on {server.url}{front} "
                 "(Ctrl-C stops)\n")
    stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _serve_openai(parser: argparse.ArgumentParser, options: argparse.Namespace, stdout: _Output,
                  stderr: TextIO) -> int:
    """``serve --openai``: the gateway on uvicorn, in front of ``--base-url`` or the local emulator."""

    def usage(message: str) -> int:
        parser.print_usage(stderr)
        print(f"h2o-chat serve: error: {message}", file=stderr)
        return 2

    try:
        import uvicorn

        from .gateway import create_app
    except ImportError as exc:
        return usage(f"the gateway needs its extra: pip install 'h2o_sdk[gateway]' ({exc})")
    if bool(options.local) == bool(options.base_url):
        return usage("--openai needs --base-url URL or --local")
    if options.api_key is None and not is_loopback(options.host):
        return usage(f"without --api-key the gateway serves loopback only, not {options.host}")
    emulator = None
    try:
        if options.local:
            from .testing import ChatServer

            emulator = ChatServer(pace=options.pace, protocol=options.protocol or "0.4").start()
            base_url, protocol = emulator.url, emulator.protocol
        else:
            check_base_url(options.base_url)
            base_url, protocol = options.base_url, options.protocol or "auto"
        app = create_app(base_url, api_key=options.api_key, lenient=options.lenient,
                         keep_conversations=options.keep_conversations, protocol=protocol,
                         cookies=dict(options.cookie) or None)
        stdout.write(f"h2o-chat: serving OpenAI's API on http://{options.host}:{options.port}/v1 in front of "
                     f"{base_url} (Ctrl-C stops)\n")
        stdout.flush()
        uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
    except ValueError as exc:
        return usage(str(exc))
    finally:
        if emulator is not None:
            emulator.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
