"""Deterministic replies and a word-piece tokenizer for the local server."""

from __future__ import annotations

import random
import re
import zlib

__all__ = ["default_reply", "tokenize"]

_PIECE = re.compile(r"\s*[\w'\u2019]+|\s*[^\w\s]|\s+")
_PROMPT, _END = "<|prompt|>", "<|endoftext|><|answer|>"
# ChatML, which chat-ui 0.8 on builds when no template is configured (protocol-eras.md, appendix).
_CHATML_USER, _CHATML_END = "<|im_start|>user\n", "<|im_end|>"

_OPENINGS = (
    "Here is a thought on “{topic}”.",
    "Let me answer “{topic}” briefly.",
    "Good question: “{topic}”.",
    "About “{topic}”, in a few lines.",
)
_SENTENCES = (
    "Water finds the lowest path and patiently carves it deeper.",
    "A good answer starts small and grows only as far as it needs to.",
    "Morning light moves slowly across the stones of the riverbed.",
    "Every long journey is a sequence of short, ordinary steps.",
    "The quiet parts of a story often carry most of its meaning.",
    "Clear questions tend to invite clear and honest answers.",
    "Old bridges remember every flood that tried to move them.",
    "Simple tools, used with care, outlast clever ones.",
    "I am the local h2oGPT emulator, so this reply is deterministic rather than wise.",
    "Wind over the water writes lines that vanish as soon as they are read.",
)


def default_reply(prompt: str) -> str:
    """A short deterministic reply to the last user message of an h2ogpt-gm or ChatML prompt."""
    # The text after the last user marker: earlier turns are history, not the question.
    if _PROMPT in prompt:
        # 0.4 ends a user turn with <|endoftext|>; 0.7's template has no end tokens (tests/data/upstream).
        last = prompt.rsplit(_PROMPT, 1)[-1].removesuffix(_END).removesuffix("<|answer|>").strip()
    elif _CHATML_USER in prompt:
        last = prompt.rsplit(_CHATML_USER, 1)[-1].split(_CHATML_END, 1)[0].strip()
    else:
        last = prompt.strip()
    topic = " ".join(last.split())
    if len(topic) > 60:
        topic = topic[:57].rstrip() + "..."
    rng = random.Random(zlib.crc32(last.encode("utf-8", "surrogatepass")))
    parts = [rng.choice(_OPENINGS).format(topic=topic or "nothing")]
    parts.extend(rng.sample(_SENTENCES, 3))
    return " ".join(parts)


def tokenize(text: str) -> list[str]:
    """Split text into word-like pieces (a word with its leading space, or a mark)."""
    return _PIECE.findall(text)


def token_id(piece: str) -> int:
    """A stable, made-up vocabulary id for a piece."""
    return 100 + zlib.crc32(piece.encode("utf-8", "surrogatepass")) % 64_000
