"""A local emulator of the h2oGPT chat service, for demos and tests.

Example::

    from h2o_sdk import Client
    from h2o_sdk.testing import Fault, serve

    with serve(pace=0) as server, Client(server.url) as client:
        print(client.chat("Hi"))
        server.inject(Fault(drop_after=3))   # the next prompt's stream breaks

It binds 127.0.0.1 by default and speaks the chat-ui protocol of every era the
SDK speaks (``serve(protocol="0.4")``, the default, up to ``"0.10"``), written from
``shared/protocol.md``, ``shared/protocol-eras.md`` and the captures of the real
releases with its own literals; it never imports the client's code. In front
of a real model server (``serve(upstream=...)``) it relays that server's reply
as each release does.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._replies import default_reply, tokenize
    from ._server import MODELS, PROTOCOLS, ChatServer, Fault, Record, serve

# Loaded on first use: the pytest plugin imports this package in every pytest process.
_MODULES = {"default_reply": "_replies", "tokenize": "_replies", "MODELS": "_server", "ChatServer": "_server",
            "Fault": "_server", "Record": "_server", "serve": "_server", "PROTOCOLS": "_server"}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'h2o_sdk.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"h2o_sdk.testing.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["MODELS", "PROTOCOLS", "ChatServer", "Fault", "Record", "default_reply", "serve", "tokenize"]
