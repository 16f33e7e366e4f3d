"""Detection decides on evidence, or says what it saw; it has a deadline; it is remembered (issue 18.2)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from h2o_sdk import APITimeoutError, Client, H2oError, ProtocolError, Timeout
from h2o_sdk.testing import PROTOCOLS, serve

from .helpers import silent_server

NGINX_404 = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1>"
             b"</center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n")


class _Fake(BaseHTTPRequestHandler):
    """A server that is no chat-ui: it answers every request with the class's ``answer``."""

    answer: tuple[int, dict[str, str], bytes] = (404, {"Content-Type": "text/html"}, NGINX_404)

    def _any(self) -> None:
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value.replace("{port}", str(self.server.server_address[1])))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


def _fake(answer: tuple[int, dict[str, str], bytes]) -> Iterator[str]:
    handler = type("Handler", (_Fake,), {"answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("answer", "says"), [
    ((404, {"Content-Type": "text/html"}, NGINX_404), "chat-ui is often served under /chat"),
    ((200, {"Content-Type": "application/json"}, b'{"status": "ok"}'), "no sign of a chat-ui server"),
    ((405, {"Content-Type": "text/plain"}, b"Method Not Allowed"), "no sign of a chat-ui server"),
    ((301, {"Location": "https://127.0.0.1:{port}/api/v2/feature-flags"}, b""), "use base_url='https://127.0.0.1"),
], ids=["nginx-404", "catch-all-json", "405-to-everything", "http-to-https"])
def test_a_server_that_is_no_chat_ui_is_named_and_explained(answer: tuple[int, dict[str, str], bytes],
                                                            says: str) -> None:
    for url in _fake(answer):
        with Client(url) as client, pytest.raises(ProtocolError) as caught:
            client.chat("Hi")
        assert says in str(caught.value)
        assert "GET /api/v2/feature-flags ->" in str(caught.value)


def test_the_app_under_a_path_and_the_root_url_given() -> None:
    with serve(base_path="/chat", protocol="0.10", pace=0) as server:
        root = server.url[: -len("/chat")]
        with Client(root) as client, pytest.raises(ProtocolError, match="served under /chat"):
            client.chat("Hi")
        assert not [r for r in server.requests if r.method == "POST"]  # nothing was written


@pytest.mark.parametrize("family", PROTOCOLS)
def test_a_url_deeper_than_the_app_names_its_root(family: str) -> None:
    with serve(base_path="/chat", protocol=family, pace=0) as server:
        with Client(server.url + "/conversation") as client, pytest.raises(ProtocolError) as caught:
            client.detect_protocol()
        assert f"whose root is {server.url}: try that as base_url" in str(caught.value)


def test_a_server_that_never_answers_ends_detection_at_its_deadline_without_retries() -> None:
    with silent_server() as (url, accepted):
        with Client(url, timeout=Timeout(connect=2, read=0.3)) as client, \
                pytest.raises(APITimeoutError, match="did not answer GET /api/v2/feature-flags"):
            client.detect_protocol()
        assert len(accepted) == 1  # one probe, not retried after its read timeout


@pytest.mark.parametrize("family", PROTOCOLS)
def test_a_new_client_per_chat_detects_once_per_process(family: str) -> None:
    with serve(protocol=family, pace=0) as server:
        for _ in range(3):
            with Client(server.url) as client:
                client.chat("Hi")
                assert client.protocol == family
        probes = [r for r in server.requests if (r.method == "GET" and not r.path.startswith(
            (server.base_path + "/conversation/", server.base_path + "/api/v2/conversations/")))
            or r.path.endswith("/summarize")]
        first = Client(server.url)
        assert first.protocol is None  # known only once asked for: then without a request
        assert first.detect_protocol() == family
        first.close()
        assert [r for r in server.requests if r.method == "GET" and r.path.endswith("/summarize")] == [
            r for r in probes if r.path.endswith("/summarize")]
        assert len(probes) <= 4  # one detection (and one model list), not one per client


@pytest.mark.parametrize(("before", "after"), [("0.10", "0.4"), ("0.4", "0.10"), ("0.9", "0.4"), ("0.4", "0.8")])
def test_a_remembered_family_that_is_wrong_is_detected_again_before_anything_is_created(before: str,
                                                                                       after: str) -> None:
    # Another server on the same port, as a restart or a test suite's next server does.
    with serve(protocol=before, pace=0) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with Client(first.url) as client:
            client.chat("Hi")
    with serve(protocol=after, pace=0, port=port) as second:
        with Client(second.url) as client:
            assert client.chat("Hi").text
            assert client.protocol == after
        assert second.live_conversations == 0


def test_a_remembered_family_that_fails_later_is_forgotten_and_says_so() -> None:
    # 0.8 and 0.9 take the same settings and create; only the prompt tells them apart.
    with serve(protocol="0.9", pace=0) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with Client(first.url) as client:
            client.chat("Hi")
    with serve(protocol="0.8", pace=0, port=port) as second:
        with Client(second.url) as client, pytest.raises(H2oError) as caught:
            client.chat("Hi")
        assert "forgotten now" in str(caught.value)
        with Client(second.url) as client:  # the next client detects it again
            assert client.chat("Hi").text and client.protocol == "0.8"
        assert second.live_conversations == 0
