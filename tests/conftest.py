"""Every test starts with no chat-ui family remembered for any URL (ports are reused between tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_family_remembered() -> Iterator[None]:
    from h2o_sdk._session import forget

    forget()
    yield
    forget()
