"""Which family a server speaks, from a few side-effect-free GETs (protocol-eras.md 9.1); no I/O.

The client sends :data:`PROBES` in order, each with ``Accept: application/json``,
and stops at the first answer :func:`decide` settles. A probe counts only with
the body it expects: v0.9.4 answers ``/api/v2/feature-flags`` with 200 and an
HTML page (its catch-all route).

| probe | answer | family |
|---|---|---|
| ``/api/v2/feature-flags`` | 200 superjson ``{"json": {...}}`` | ``"0.10"`` (with ``searchEnabled``: ``"0.9"``) |
| | a redirect (login required for everything) | ``"0.10"`` |
| ``/api/models`` | 200 JSON array whose models have ``tools`` | ``"0.9"`` |
| | 200 JSON array without ``tools``, or 403 ``API is disabled`` | ``"0.8"`` |
| ``/conversation/000000000000000000000000/summarize`` | 405 (the route exists, POST only) | ``"0.4"`` |
| | 404 | ``"0.7"`` |
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROBES", "decide"]

PROBES = ("/api/v2/feature-flags", "/api/models", "/conversation/000000000000000000000000/summarize")


def decide(probe: str, status: int, content_type: str, body: Any) -> str | None:
    """The family an answer to ``probe`` shows, or ``None`` to go on to the next probe.

    Args:
        body: The answer's body, decoded: JSON when it parsed, else text.
    """
    if probe == PROBES[0]:
        if status in (301, 302, 303, 307, 308):
            return "0.10"
        document = _json(content_type, body)
        if status == 200 and isinstance(document, dict):
            flags = document.get("json", document)
            if isinstance(flags, dict):
                return "0.9" if "searchEnabled" in flags else "0.10"
        return None
    if probe == PROBES[1]:
        if status == 403 and isinstance(body, str) and "API is disabled" in body[:200]:
            return "0.8"
        document = _json(content_type, body)
        if status == 200 and isinstance(document, list):
            has_tools = any(isinstance(m, dict) and "tools" in m for m in document)
            return "0.9" if has_tools else "0.8"
        return None
    if probe == PROBES[2]:
        if status == 405:
            return "0.4"
        if status == 404:
            return "0.7"
    return None


def _json(content_type: str, body: Any) -> Any:
    """The JSON of an answer that says it is JSON (a catch-all HTML page is not a probe's answer)."""
    return body if "json" in content_type.lower() and not isinstance(body, str) else None
