"""Which family a server speaks, from a few side-effect-free GETs (protocol-eras.md 9.1); no I/O.

The client sends :data:`PROBES` in order, each with ``Accept: application/json``,
and stops at the first :class:`Answer` that :func:`decide` settles. A family is
chosen only on a positive sign of chat-ui that the real release gives; an nginx
page, a catch-all JSON answer, a gateway answering 405 to everything or a
redirect to https show none, and :func:`explain` then says what each probe got
and what to check (issue 18.2).

| probe | answer | family |
|---|---|---|
| ``/api/v2/feature-flags`` | 200 superjson ``{"json": {flags}}`` | ``"0.10"`` (with ``searchEnabled``: ``"0.9"``) |
| | a redirect to an OAuth/login page (login required for everything) | ``"0.10"`` |
| ``/api/models`` | 200 JSON array of models (``{"id", ...}``) with ``tools`` | ``"0.9"`` |
| | the same without ``tools``, or 403 ``API is disabled`` | ``"0.8"`` |
| ``.../summarize`` (a made-up id) | 405 ``GET method not allowed``, ``Allow: POST`` (a POST-only route) | ``"0.4"`` |
| | 404, a SvelteKit page whose app root (start script, ``_app/immutable`` links) is the base URL | ``"0.7"`` |
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

__all__ = ["PROBES", "Answer", "app_root", "decide", "explain", "is_sveltekit_page"]

PROBES = ("/api/v2/feature-flags", "/api/models", "/conversation/000000000000000000000000/summarize")

# Keys every release's feature flags have carried (captures of v0.10.0 and HEAD; F2 adds searchEnabled).
_PAGE_LIMIT = 1 << 20
_FLAG_KEYS = frozenset({"enableAssistants", "loginEnabled", "searchEnabled"})
_LOGIN_PAGE = re.compile(r"login|oauth|authorize|signin", re.IGNORECASE)
_IMMUTABLE = re.compile(r"""[<"']([^<>"'\s]*?)_app/immutable/""")
# SvelteKit's start script names the app's base path: relative to the page (base: new URL("../..",
# location)...), as builds with relative paths do, or absolute (base: "/chat"), as v0.10 does (captures).
_BASE_RELATIVE = re.compile(r"""\bbase: new URL\(["']([./]*)["']""")
_BASE_ABSOLUTE = re.compile(r"""\bbase: ["']([^"']*)["']""")


@dataclass(frozen=True)
class Answer:
    """What one probe got.

    Attributes:
        probe: The probe's path.
        url: The URL it was sent to.
        status: The status code.
        headers: The answer's headers (any letter case).
        body: The body, decoded: JSON when it parsed, else text (possibly cut short).
    """

    probe: str
    url: str
    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def content_type(self) -> str:
        return _header(self.headers, "content-type")


def decide(answer: Answer) -> str | None:
    """The family ``answer`` shows a positive sign of, or ``None`` to go on to the next probe."""
    probe, status = answer.probe, answer.status
    if probe == PROBES[0]:
        if status in (302, 303, 307) and _LOGIN_PAGE.search(urlsplit(_header(answer.headers, "location")).path):
            return "0.10"  # AUTOMATIC_LOGIN: every route goes to the identity provider (8.1)
        document = _json(answer)
        if status == 200 and isinstance(document, Mapping):
            flags = document.get("json")
            if isinstance(flags, Mapping) and _FLAG_KEYS & set(flags):
                return "0.9" if "searchEnabled" in flags else "0.10"
            if "searchEnabled" in document:
                return "0.9"  # 2025-06-05..08: plain JSON, before superjson
        return None
    if probe == PROBES[1]:
        if status == 403 and isinstance(answer.body, str) and "API is disabled" in answer.body[:200]:
            return "0.8"
        document = _json(answer)
        if status == 200 and isinstance(document, list) and document and all(
            isinstance(m, Mapping) and isinstance(m.get("id"), str) for m in document
        ):
            return "0.9" if any("tools" in m for m in document) else "0.8"
        return None
    if probe == PROBES[2]:
        if status == 405 and "POST" in _header(answer.headers, "allow").upper() and isinstance(answer.body, str) \
                and "method not allowed" in answer.body[:200].lower():
            return "0.4"
        if status == 404 and is_sveltekit_page(answer):
            # Every release answers a route it lacks with this page: it is 0.7's only where the page's
            # app root is the base URL (a base URL deeper than the app gets it from any release).
            base = answer.url[: -len(probe)] if answer.url.endswith(probe) else None
            return "0.7" if app_root(answer) == base else None
    return None


def is_sveltekit_page(answer: Answer) -> bool:
    """Whether ``answer`` is a page of a SvelteKit app, as every chat-ui release's pages are."""
    if _header(answer.headers, "x-sveltekit-page").lower() == "true":
        return True
    text = _text(answer) if "html" in answer.content_type.lower() else ""
    return _IMMUTABLE.search(text) is not None or "__sveltekit" in text


def app_root(answer: Answer) -> str | None:
    """The root URL of the SvelteKit app a page belongs to, from its start script or its assets' links."""
    text = _text(answer) if "html" in answer.content_type.lower() else ""
    relative = _BASE_RELATIVE.search(text)
    if relative is not None:
        return _root(urljoin(answer.url, relative.group(1) or "."))
    absolute = _BASE_ABSOLUTE.search(text)
    if absolute is not None:
        parts = urlsplit(answer.url)
        return _root(f"{parts.scheme}://{parts.netloc}{absolute.group(1)}")
    for source in (_header(answer.headers, "link"), text):
        found = _IMMUTABLE.search(source)
        if found is not None:
            return _root(urljoin(answer.url, found.group(1) or "./"))
    return None


def _root(url: str) -> str:
    return url.rstrip("/")


def explain(base_url: str, answers: Sequence[Answer]) -> str:
    """Why no family was chosen, what each probe got, and what to check."""
    seen = "; ".join(f"GET {a.probe} -> {a.status} {a.content_type or 'no content type'}" for a in answers)
    hints = []
    for answer in answers:
        location = _header(answer.headers, "location")
        if answer.status in (301, 302, 303, 307, 308) and location:
            target = urljoin(answer.url, location)
            if urlsplit(answer.url).scheme == "http" and urlsplit(target).scheme == "https":
                hints.append(f"the server redirects to https ({target}): use base_url='https://"
                             f"{urlsplit(base_url).netloc}{urlsplit(base_url).path}'")
            else:
                hints.append(f"GET {answer.probe} redirects to {target}: check base_url, or log in if that is a "
                             "login page (cookies=...)")
            break
    roots = {root for answer in answers if (root := app_root(answer)) is not None and root != base_url}
    if roots:
        hints.append(f"its pages are a SvelteKit app whose root is {sorted(roots)[0]}: try that as base_url")
    elif any(is_sveltekit_page(answer) for answer in answers):
        hints.append("it is a SvelteKit app, but none of the chat-ui releases this SDK knows")
    if any(answer.status == 401 for answer in answers):
        hints.append("it asks for a login: pass the cookies of a logged-in session (cookies=...)")
    if not hints:
        hints.append("check base_url: it must include the app's path (e.g. https://huggingface.co/chat; "
                     "chat-ui is often served under /chat)")
    return (f"{base_url} shows no sign of a chat-ui server ({seen}): {'; '.join(hints)}; or name the family "
            "with protocol=...")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or ""


def _json(answer: Answer) -> Any:
    """The JSON of an answer that says it is JSON (a catch-all HTML page is not a probe's answer)."""
    body = answer.body
    return body if "json" in answer.content_type.lower() and not isinstance(body, str) else None


def _text(answer: Answer) -> str:
    body = answer.body
    # A dev-mode page runs to a few hundred KB, with its start script at the end (v0.6: 219 KB in).
    return body[:_PAGE_LIMIT] if isinstance(body, str) else ""
