"""pytest fixtures for code that uses h2o_sdk (registered through ``pytest11``).

``h2o_server`` yields a running local emulator (no pacing, so tests are fast);
``h2o_client`` yields a :class:`h2o_sdk.Client` bound to it. After the test,
``h2o_server`` fails the test if any conversation was left alive. Options of
:func:`h2o_sdk.testing.serve` come from a marker::

    @pytest.mark.h2o_server(reply="Hello.", faults=[Fault(drop_after=2)])
    def test_my_bot(h2o_client): ...

Loading the plugin imports nothing of the SDK: it is loaded by every pytest
process where h2o_sdk is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from h2o_sdk import Client
    from h2o_sdk.testing import ChatServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "h2o_server(**options): options of h2o_sdk.testing.serve for h2o_server")


@pytest.fixture
def h2o_server(request: pytest.FixtureRequest) -> Iterator[ChatServer]:
    """A running local chat-ui emulator on 127.0.0.1 (``pace=0`` unless the marker says otherwise)."""
    from h2o_sdk.testing import serve

    marker = request.node.get_closest_marker("h2o_server")
    options = {"pace": 0, **(marker.kwargs if marker is not None else {})}
    with serve(**options) as server:
        yield server
        leaked = server.live_conversations
    if leaked:
        pytest.fail(f"{leaked} conversation(s) were left alive on the h2o_server", pytrace=False)


@pytest.fixture
def h2o_client(h2o_server: ChatServer) -> Iterator[Client]:
    """A :class:`h2o_sdk.Client` bound to ``h2o_server``."""
    from h2o_sdk import Client

    with Client(h2o_server.url) as client:
        yield client
