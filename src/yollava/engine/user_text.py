"""Text a person typed is tokenised as text: ``</s>``, ``<s>``, ``<unk>`` or ``<|im_end|>`` in a question never
becomes the tokenizer's special token (an end of turn, a new turn, ...), while the chat template's own markers
around it still do.

The pipeline marks each message's text with :func:`mark` before the chat template renders the prompt; the
marks are two Unicode noncharacters (U+FDD0 and U+FDD1, reserved for a program's internal use, so removed from
the text first). :func:`segments` then cuts the rendered prompt into ``(text, literal)`` pieces for the
tokenizer: a marked span that holds one of the tokenizer's special-token strings becomes its own piece,
tokenised with ``split_special_tokens=True``; every other span stays where it was, so a prompt without such
strings is tokenised exactly as before (the marks themselves are dropped).
"""

from __future__ import annotations

import re
from functools import lru_cache

OPEN, CLOSE = "\ufdd0", "\ufdd1"
_MARKS = re.compile(f"[{OPEN}{CLOSE}]")


def mark(text: str) -> str:
    """``text`` marked as typed by a person (any marks already in it are removed)."""
    return OPEN + _MARKS.sub("", text) + CLOSE


def unmark(text: str) -> str:
    return _MARKS.sub("", text)


def special_strings(tokenizer) -> tuple[str, ...]:
    """The strings the tokenizer turns into special tokens (``<s>``, ``</s>``, ``<|im_start|>``, ...)."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            found.add(str(getattr(added, "content", added)))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


@lru_cache(maxsize=16)
def _pattern(specials: tuple[str, ...]) -> re.Pattern | None:
    return re.compile("|".join(re.escape(s) for s in specials)) if specials else None


def segments(text: str, specials: tuple[str, ...]) -> list[tuple[str, bool]]:
    """``text`` (a rendered prompt, possibly holding marked spans) as ``[(piece, literal)]``, marks removed; a
    ``literal`` piece is a marked span that holds a special-token string (tokenise it with
    ``split_special_tokens=True``). Unmatched marks are dropped."""
    if OPEN not in text and CLOSE not in text:
        return [(text, False)]
    pattern = _pattern(specials)
    out: list[tuple[str, bool]] = []
    plain: list[str] = []
    pos = 0
    while pos < len(text):
        start = text.find(OPEN, pos)
        end = text.find(CLOSE, start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            plain.append(unmark(text[pos:]))
            break
        plain.append(unmark(text[pos:start]))
        span = unmark(text[start + 1 : end])
        if pattern is not None and pattern.search(span):
            if plain:
                out.append(("".join(plain), False))
                plain = []
            out.append((span, True))
        else:
            plain.append(span)
        pos = end + 1
    if plain:
        out.append(("".join(plain), False))
    return [(piece, literal) for piece, literal in out if piece]
