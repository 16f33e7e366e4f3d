"""The local server forwarding prompts to a TGI-compatible /generate_stream, as chat-ui did."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from h2o_sdk import Client, UnprocessableEntityError
from h2o_sdk.testing import ChatServer, serve


class FakeTGI(BaseHTTPRequestHandler):
    """A minimal text-generation-inference /generate_stream: echoes the prompt's length."""

    protocol_version = "HTTP/1.1"
    received: ClassVar[list[dict[str, Any]]] = []
    status = 200
    pace = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeTGI.received.append(body)
        if FakeTGI.status != 200:
            error = json.dumps({"error": "Input validation error: `inputs` too long", "error_type": "validation"})
            self.send_response(FakeTGI.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(error)))
            self.end_headers()
            self.wfile.write(error.encode())
            return
        words = ["TGI", " saw", f" {len(body['inputs'])}", " chars."]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("x-compute-type", "fake")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for index, word in enumerate([*words, "<|endoftext|>"]):
            last = index == len(words)
            event = {"token": {"id": index, "text": word, "logprob": -0.1, "special": last},
                     "generated_text": "".join(words) if last else None, "details": None}
            data = b"data:" + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            except OSError:
                return
            time.sleep(FakeTGI.pace)
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def tgi() -> Iterator[str]:
    FakeTGI.received, FakeTGI.status, FakeTGI.pace = [], 200, 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTGI)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/generate_stream"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def server(tgi: str) -> Iterator[ChatServer]:
    with serve(upstream=tgi) as s:
        yield s
        assert s.live_conversations == 0


def test_prompts_are_forwarded_with_only_inputs_replaced(server: ChatServer) -> None:
    with Client(server.url) as client, client.conversation() as conversation:
        first = conversation.chat("Hello", seed=3)
        prompt = "<|prompt|>Hello<|endoftext|><|answer|>"
        assert first.text == f"TGI saw {len(prompt)} chars."
        sent = FakeTGI.received[0]
        assert sent["inputs"] == prompt
        assert sent["parameters"]["seed"] == 3 and sent["stream"] is True and "options" in sent
        second = conversation.chat("Again")
        prompt2 = f"{prompt}{first.text}<|endoftext|><|prompt|>Again<|endoftext|><|answer|>"
        assert FakeTGI.received[1]["inputs"] == prompt2 and second.text == f"TGI saw {len(prompt2)} chars."
        stored = server.conversation(conversation.id or "")
        assert stored is not None and [m["content"] for m in stored["messages"]] == [
            "Hello", first.text, "Again", second.text]


def test_upstream_errors_pass_through(server: ChatServer) -> None:
    FakeTGI.status = 422
    with Client(server.url) as client, pytest.raises(UnprocessableEntityError, match="inputs` too long") as info:
        client.chat("Hi")
    assert info.value.error_type == "validation"


def test_stop_cuts_the_forwarded_stream_and_keeps_the_partial_reply(server: ChatServer) -> None:
    FakeTGI.pace = 0.2
    with Client(server.url) as client, client.conversation() as conversation:
        for _ in conversation.stream("Hello"):
            break
        assert conversation.history[1]["content"].startswith("TGI")
        stored = server.conversation(conversation.id or "")
        assert stored is not None and stored["messages"][1]["content"] == conversation.history[1]["content"]
