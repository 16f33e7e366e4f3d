"""TLS against the local server: private CAs, the caller's session, one TLS context per client."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
import urllib3.connection

from h2o_sdk import APIConnectionError, Client
from h2o_sdk.testing import ChatServer, serve

from .test_live import REPLY


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_path(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def server(ca: trustme.CA) -> Iterator[ChatServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with serve(pace=0, reply=REPLY, ssl_context=context) as s:
        assert s.url.startswith("https://")
        yield s
        assert s.live_conversations == 0


def test_a_private_ca_given_as_verify(server: ChatServer, ca_path: str) -> None:
    with Client(server.url, verify=ca_path) as client:
        assert client.chat("Hi").text == REPLY


def test_the_callers_session_settings_apply(server: ChatServer, ca_path: str) -> None:
    # 11.12: verify=True was sent on every request, overriding the session's CA.
    with requests.Session() as session:
        session.verify = ca_path
        with Client(server.url, session=session) as client:
            assert client.chat("Hi").text == REPLY


def test_an_untrusted_certificate_is_a_connection_error_that_is_not_retried(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with Client(server.url, max_retries=3) as client, pytest.raises(APIConnectionError) as info:
        client.chat("Hi")
    assert info.value.connect  # nothing was sent
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate" in str(info.value).lower()
    assert server.paths() == []


def test_a_missing_ca_bundle_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CA bundle"):
        Client("https://127.0.0.1:1", verify=str(tmp_path / "missing.pem"))


def test_connections_share_the_clients_tls_context(
    server: ChatServer, ca_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 11.15: urllib3 built a context (and loaded the CA bundle) for every new connection.
    built: list[Any] = []
    create = urllib3.connection.create_urllib3_context  # type: ignore[attr-defined]

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return create(*args, **kwargs)

    monkeypatch.setattr(urllib3.connection, "create_urllib3_context", counting)
    server.pace = 0.02
    with Client(server.url, verify=ca_path) as client:
        barrier = threading.Barrier(4)
        texts: list[str] = []

        def chat() -> None:
            barrier.wait()
            texts.append(client.chat("Hi").text)

        threads = [threading.Thread(target=chat) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        connections = {record.port for record in server.requests}
        pools = client._http._session.adapters["https://"].poolmanager.pools  # type: ignore[attr-defined]
        pools = [pools[key] for key in pools.keys()]  # noqa: SIM118 - urllib3 refuses iteration
    assert texts == [REPLY] * 4
    assert len(connections) >= 2 and built == []
    # and nothing makes urllib3 load the CA bundle into it again for each connection
    assert pools and all(pool.ca_certs is None and pool.ca_cert_dir is None for pool in pools)
