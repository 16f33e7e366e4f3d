"""One owner of the server session: the family, the session cookie, the welcome modal, the model.

Everything here is per server session and shared by every turn of a client:

- the wire family, detected once on first need (protocol-eras.md 9.1), or named;
- the session itself: a client has exactly one. Whatever mints it (the
  welcome modal's settings POST up to 0.9, the first POST of any kind in 0.10,
  where there is no gate) happens once; every other request that needs the
  session waits for it (:meth:`ServerSession.minting`), so requests sent at
  once by a new client never each get an anonymous session of their own and
  lose their conversations (issue 18.1);
- the model list and the model used when a call names none;
- what an error means for a chat-ui session (a login needed, a named family
  the server does not speak, the offline default service).

Requests go through :meth:`ServerSession.request` (and ``stream``/``read``),
which add those explanations and accept the welcome modal again when the
server forgot it (405).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from . import _protocol
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    H2oError,
    IncompleteStreamError,
    ProtocolError,
    SessionCookieError,
    UnsupportedError,
    decode_body,
    status_error,
)
from ._http import Abort, Http, Response, StreamBody
from ._protocol import FAMILIES, Family, _detect

__all__ = ["FamilyChanged", "ServerSession", "add_to_message", "forget"]

logger = logging.getLogger("h2o_sdk")

_LOGIN_HINT = (
    "this server needs a logged-in session: pass the cookies of one, e.g. Client(url, cookies={'hf-chat': ...}) "
    "(HuggingChat also needs its 'token' cookie; h2o-chat --cookie NAME=VALUE)"
)
# How often a request waiting for the session looks whether its turn was aborted.
_MINT_POLL = 0.05
# Detection waits for the server's answers at most this long (plus the connect timeout).
_DETECT_READ = 10.0
# Statuses with which a server can refuse a request of a family it does not speak.
_DOUBTFUL = frozenset({400, 403, 404, 405, 500})

# What detection found, per base URL, for the process: a program that makes a new Client per chat
# pays the probes once (issue 18.2). Forgotten when the server answers as another family would.
_known_lock = threading.Lock()
_known: dict[str, tuple[str, tuple[str, ...] | None]] = {}


def forget(base_url: str | None = None) -> None:
    """Forget the family (and model list) remembered for ``base_url``, or for every URL."""
    with _known_lock:
        if base_url is None:
            _known.clear()
        else:
            _known.pop(base_url, None)


class FamilyChanged(ProtocolError):
    """A family remembered for the URL was wrong, and the server speaks another: nothing was created.

    The turn starts over with the family now known (``_lifecycle``).
    """


class ServerSession:
    """The client's one session on the server, and what is known of the server.

    Args:
        http: The HTTP boundary.
        protocol: ``"auto"`` or a family's name (checked by the caller).
        model: The model named by the caller, or ``None`` (the seed's, or
            the server's first when it lists models without that one).
        logged_in: The caller passed cookies: the session is theirs, and its
            settings are its owner's (the welcome modal is not accepted).
    """

    def __init__(self, http: Http, *, protocol: str, model: str | None, logged_in: bool) -> None:
        self._http = http
        self.protocol = protocol
        self._family: Family | None = None if protocol == "auto" else FAMILIES[protocol]
        self._family_lock = threading.Lock()
        self._model_named = model is not None
        self.model = model if model is not None else _protocol.DEFAULT_MODEL
        self._models_checked = False
        self._listed: list[str] | None = None  # the models detection saw
        self._logged_in = logged_in
        self._settings_lock = threading.Lock()
        self._settings_accepted = False
        self._mint_lock = threading.Lock()
        self._established = False
        self._remembered = False  # the family came from an earlier client of this URL
        self._confirmed = False  # a request of the family's shape succeeded

    @property
    def established(self) -> bool:
        """Whether the session exists on the server (its minting request has succeeded)."""
        return self._established

    @property
    def known_family(self) -> Family | None:
        """The family, once configured or detected."""
        return self._family

    # -- the family and the model -------------------------------------------------

    def name_model(self, model: str) -> None:
        """Use ``model`` when a call names none, from now on (never replaced by the server's)."""
        self.model = model
        self._model_named = True

    def family(self, abort: Abort) -> Family:
        """The server's family (detected on first need) and, unless named, the model chosen."""
        family = self._family
        if family is not None and (self._model_named or self._models_checked):
            return family
        with self._family_lock:
            base_url = self._http.base_url
            if self._family is None:
                with _known_lock:
                    known = _known.get(base_url)
                if known is not None:
                    self._family, self._remembered = FAMILIES[known[0]], True
                    self._listed = list(known[1]) if known[1] is not None else None
                else:
                    self._family = FAMILIES[self._detect(abort)]
                    logger.info("%s speaks the chat-ui %s protocol", base_url, self._family)
            family = self._family
            if not self._model_named and not self._models_checked:
                self._pick_model(family, abort)
                self._models_checked = True
            if self.protocol == "auto":
                with _known_lock:
                    _known[base_url] = family.name, tuple(self._listed) if self._listed is not None else None
        return family

    def confirm(self) -> None:
        """A request only the family's server takes succeeded: what was remembered holds."""
        self._confirmed = True

    def recheck(self, exc: H2oError, abort: Abort) -> None:
        """The first request of a remembered family failed: detect the family again.

        Raises:
            FamilyChanged: The server speaks another family now (nothing was created).
        """
        family = self._family
        if not self._remembered or self._confirmed or family is None:
            return
        logger.info("%s answered as %s would not (%s); detecting its family again", self._http.base_url, family, exc)
        forget(self._http.base_url)
        with self._family_lock:
            self._remembered = False
            self._family, self._listed = None, None
            self._models_checked = self._model_named
        found = self.family(abort)
        if found is not family:
            raise FamilyChanged(f"{self._http.base_url} speaks chat-ui {found} now, not {family}") from exc

    def doubt(self, exc: H2oError) -> None:
        """The server answered as another family would: forget what was remembered, and say so."""
        if not self._remembered or (isinstance(exc, APIStatusError) and exc.status_code not in _DOUBTFUL):
            return
        self._remembered = False
        forget(self._http.base_url)
        family = self._family
        add_to_message(exc, f" (this client took the server's family, {family.name if family else '?'}, from an "
                            "earlier client of the same URL in this process; it is forgotten now, so the next "
                            "client detects it again)")

    def _detect(self, abort: Abort) -> str:
        """Run the probes of protocol-eras.md 9.1 until one shows a sign of chat-ui, within one deadline.

        Raises:
            ProtocolError: No probe showed a sign of chat-ui (the message says what each got).
            APITimeoutError: The server accepted the connection and did not answer in time.
        """
        timeout = self._http.timeout
        limit = timeout.connect + min(timeout.read, _DETECT_READ)
        deadline = time.monotonic() + limit
        answers = []
        for probe in _detect.PROBES:
            try:
                # idempotent=False: a probe whose answer did not come is not sent again (18.2).
                response = self.request("GET", probe, follow=False, reaccept=False, abort=abort,
                                        deadline=deadline, idempotent=False)
                status, headers, content = response.status_code, response.headers, response.content
                body = decode_body(content, headers.get("Content-Type", ""))
            except APIStatusError as exc:
                status, headers, body = exc.status_code, exc.headers, exc.body
            except APITimeoutError as exc:
                if exc.connect:
                    raise
                raise APITimeoutError(
                    f"{self._http.base_url} did not answer GET {probe} within {limit:.0f} s, so its chat-ui "
                    "family could not be told; check that base_url is a chat-ui server, or name the family "
                    "with protocol=...", method="GET", url=self._http.base_url + probe,
                ) from exc
            answer = _detect.Answer(probe, self._http.base_url + probe, status, headers, body)
            found = _detect.decide(answer)
            if found is not None:
                if probe == "/api/models" and isinstance(body, list):
                    self._listed = _model_ids(body)  # the model list, already here
                return found
            answers.append(answer)
        raise ProtocolError(_detect.explain(self._http.base_url, answers))

    def _pick_model(self, family: Family, abort: Abort) -> None:
        """Use the server's first model when it lists models without the default one."""
        if family.models is None:
            return
        try:
            served = self._listed if self._listed is not None else self.list_models(family, abort)
        except H2oError as exc:
            logger.info("could not list the server's models: %s", exc)
            return
        self._listed = served
        if served and self.model not in served:
            logger.info("%s does not serve %s; using its first model, %s", self._http.base_url, self.model, served[0])
            self.model = served[0]

    def list_models(self, family: Family, abort: Abort | None = None) -> list[str]:
        """The ids of the models the server serves.

        Raises:
            UnsupportedError: The family has no model list.
            H2oError: The server refused, or the network failed.
        """
        if family.models is None:
            raise UnsupportedError(
                f"chat-ui {family.releases} (protocol {family.name!r}) has no model list (/api/models came in v0.8)"
            )
        response = self.request("GET", family.models, reaccept=False, abort=abort)
        document = response.json()
        if family.superjson and isinstance(document, Mapping):
            document = document.get("json")
        if not isinstance(document, list):
            raise ProtocolError(f"GET {family.models} did not answer a list of models: {response.text[:200]!r}")
        return _model_ids(document)

    # -- the one session ----------------------------------------------------------------

    def establish(self, abort: Abort) -> None:
        """Before a conversation is created: accept the welcome modal where the family has one.

        A logged-in session (the caller's cookies) keeps its owner's settings;
        if its server still asks, the 405 accepts the modal then.

        Raises:
            FamilyChanged: The family was remembered, and the server speaks another.
        """
        if self._logged_in:
            return
        try:
            self._accept_settings(abort)
        except (APIStatusError, ProtocolError) as exc:
            self.recheck(exc, abort)
            raise

    def connect(self, abort: Abort) -> None:
        """Establish the session now, in every family (``Client.connect()``).

        Where a gate exists its acceptance mints the session. In 0.10, which
        has none, the welcome modal's own settings POST does (it only stores
        that the modal was seen), unless the caller's cookies are the session.
        """
        family = self.family(abort)
        if self._logged_in:
            return
        if family.settings is not None:
            self._accept_settings(abort)
            return
        if family.session_settings is None:
            return
        with self.minting(abort):
            if self._established:
                return
            self.request(
                "POST", family.session_settings, json_body=family.settings_body(self.model),
                headers={"Referer": self._http.base_url + "/"}, follow=False, reaccept=False, abort=abort,
            )

    @contextlib.contextmanager
    def minting(self, abort: Abort) -> Iterator[None]:
        """Around a request that may mint the session: until one such request has
        succeeded, they go one at a time, and the others wait for it.

        Once one got a 2xx answer, the server has set the session's cookie and
        every later request carries it: from then on they go at once.

        Raises:
            IncompleteStreamError: ``abort`` fired while waiting (nothing was sent).
        """
        if self._established:
            yield
            return
        _acquire(self._mint_lock, abort)
        if self._established:
            self._mint_lock.release()
            yield
            return
        try:
            yield
            self._established = True
        finally:
            self._mint_lock.release()

    def _accept_settings(self, abort: Abort | None = None, *, again: bool = False) -> None:
        """Accept the welcome modal once per session, as the family does (protocol.md 1, 2.3;
        protocol-eras.md 3.1: JSON from v0.7, no gate from v0.10)."""
        abort = abort or Abort()
        family = self.family(abort)
        if family.settings is None or (self._settings_accepted and not again):
            return
        _acquire(self._settings_lock, abort)
        try:
            if self._settings_accepted and not again:
                return
            kind: dict[str, Any] = (
                {"form": family.settings_body(self.model)} if family.settings == "form"
                else {"json_body": family.settings_body(self.model)}
            )
            try:
                response = self.request(
                    "POST",
                    _protocol.SETTINGS_PATH,
                    headers={"Referer": self._http.base_url + "/"},
                    follow=False,  # its 303 is the success answer
                    reaccept=False,
                    abort=abort,
                    **kind,
                )
            except APIStatusError as exc:
                name_the_model(exc, self.model, "accept the welcome modal")
                raise
            body = response.json()
            if isinstance(body, Mapping) and body.get("type") in ("error", "failure"):
                status = body.get("status")
                raise status_error(
                    status if isinstance(status, int) and status >= 400 else 500,
                    body=body,
                    headers=response.headers,
                    method="POST",
                    url=self._http.base_url + _protocol.SETTINGS_PATH,
                )
            self._check_cookies(response)
            self._settings_accepted = True
            self._established = True
            self._confirmed = True
        finally:
            self._settings_lock.release()

    def _check_cookies(self, response: Response) -> None:
        if self._http.sends_secure_cookies_back or not response.secure_cookies:
            return
        raise SessionCookieError(
            f"{self._http.base_url} set its session cookie ({', '.join(response.secure_cookies)}) with the Secure "
            "flag, so it is never sent back over plain http:// and every later request would be a new "
            "session. Use the https:// URL of the service (or run chat-ui in dev mode)."
        )

    # -- requests with what they mean for a chat-ui session ---------------------------------

    def request(self, method: str, path: str, *, reaccept: bool = True, **kwargs: Any) -> Response:
        """:meth:`Http.request`, explaining errors, and accepting the welcome modal again on a 405 once."""
        response: Response = self._sent(self._http.request, method, path, reaccept, kwargs)
        return response

    def stream(self, method: str, path: str, **kwargs: Any) -> StreamBody:
        """:meth:`Http.stream`, as :meth:`request`."""
        body: StreamBody = self._sent(self._http.stream, method, path, True, kwargs)
        return body

    def _sent(self, send: Any, method: str, path: str, reaccept: bool, kwargs: dict[str, Any]) -> Any:
        try:
            return send(method, path, **kwargs)
        except H2oError as exc:
            self._explain(method, exc)
            if not (isinstance(exc, APIStatusError) and exc.status_code == 405 and reaccept
                    and self._reaccept(exc, method, path, kwargs.get("abort"))):
                raise
        try:
            return send(method, path, **kwargs)
        except H2oError as exc:
            self._explain(method, exc)
            raise

    def read(self, path: str, limit: int, **kwargs: Any) -> bytes:
        """:meth:`Http.read`, explaining errors."""
        try:
            return self._http.read(path, limit, **kwargs)
        except H2oError as exc:
            self._explain("GET", exc)
            raise

    def _reaccept(self, exc: APIStatusError, method: str, path: str, abort: Abort | None) -> bool:
        """Whether the welcome modal was accepted again after a 405 (the server forgot the session)."""
        family = self._family
        if family is None:
            return False
        if family.settings is None:
            if self.protocol == "auto":  # a named family's hint is in the message already
                add_to_message(exc, self.family_hint())
            return False
        logger.info("%s %s answered 405; accepting the welcome modal again", method, path)
        self._accept_settings(abort, again=True)
        return True

    def _explain(self, method: str, exc: H2oError) -> None:
        """Say what an error means for a chat-ui session (only on the error path: no cost otherwise)."""
        if isinstance(exc, AuthenticationError):
            add_to_message(exc, f": {_LOGIN_HINT}")
        elif isinstance(exc, APIStatusError):
            if self.protocol != "auto" and exc.status_code in (400, 403, 405, 500) and method == "POST":
                # A family named by the caller, and a server that rejects its requests: say what to try.
                add_to_message(exc, self.family_hint())
        elif isinstance(exc, APIConnectionError) and exc.connect:
            add_to_message(exc, self._unreachable_hint())

    def family_hint(self) -> str:
        """What to try when a named family's requests are rejected ("" if no family is known)."""
        family = self._family
        if family is None:
            return ""
        return (f"; is the server chat-ui {family.releases}, as protocol={family.name!r} says? protocol='auto' "
                "detects the family it speaks")

    def _unreachable_hint(self) -> str:
        if self._http.base_url != _protocol.DEFAULT_BASE_URL:
            return ""
        return (
            f". The hosted h2oGPT service ({_protocol.DEFAULT_BASE_URL}) has been offline since 2023: "
            "pass the URL of a chat-ui server as base_url (h2o-chat --base-url URL), or run the local "
            "emulator (h2o-chat --local, or h2o_sdk.testing.serve())"
        )


def _acquire(lock: threading.Lock, abort: Abort) -> None:
    """Take ``lock``, waiting for the request that holds it unless ``abort`` fires first.

    Raises:
        IncompleteStreamError: ``abort`` fired while waiting.
    """
    while not lock.acquire(timeout=_MINT_POLL):
        if abort.aborted:
            raise IncompleteStreamError("the stream was aborted while it waited for the server session")


def name_the_model(exc: APIStatusError, model: str, what: str) -> None:
    """Say which model a bare chat-ui 500 is about (an unknown model id: protocol.md 2.3, 2.4)."""
    if exc.status_code in (400, 500):
        add_to_message(exc, f": the server could not {what} with the model {model!r}; check that it serves that "
                            "model id (model=..., h2o-chat --model)")


def add_to_message(exc: H2oError, text: str) -> None:
    """Say more in an error's message (``str()`` and ``args`` follow)."""
    exc.message += text
    exc.args = (exc.message,)


def _model_ids(models: list[Any]) -> list[str]:
    return [m["id"] for m in models if isinstance(m, Mapping) and isinstance(m.get("id"), str)]
