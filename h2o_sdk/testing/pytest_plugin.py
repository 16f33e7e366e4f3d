"""pytest fixtures for code that uses h2o_sdk (registered through ``pytest11``).

``h2o_server`` yields a running local emulator (no pacing, so tests are fast);
``h2o_client`` yields a :class:`h2o_sdk.Client` bound to it. After the test,
``h2o_server`` fails the test if any conversation was left alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from h2o_sdk import Client
    from h2o_sdk.testing import ChatServer


@pytest.fixture
def h2o_server() -> Iterator[ChatServer]:
    """A running local chat-ui emulator on 127.0.0.1 with ``pace=0``."""
    from h2o_sdk.testing import serve

    with serve(pace=0) as server:
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
