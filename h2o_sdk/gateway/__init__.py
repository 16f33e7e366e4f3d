"""An OpenAI-compatible gateway in front of any chat-ui server (``pip install 'h2o_sdk[gateway]'``).

Tools that speak OpenAI's chat-completions API (the official ``openai``
client, LangChain's ``ChatOpenAI``, LiteLLM, editors and agents) reach every
chat-ui release through it::

    from h2o_sdk.gateway import create_app
    import uvicorn

    uvicorn.run(create_app("http://127.0.0.1:8080"), host="127.0.0.1", port=8000)

or ``h2o-chat serve --openai --base-url URL``. It is an ASGI application on
Starlette, built on :class:`h2o_sdk.AsyncClient` like any other user of the SDK.
"""

from ._app import create_app

__all__ = ["create_app"]
