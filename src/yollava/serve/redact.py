"""Keep server paths out of what clients see: error messages name the concept and the problem only.

Library errors are written for a local user and may name files (``/home/me/.local/share/yollava/...``),
the model's local folder, or a user's folder (``users/<id>/...``). Every message the server sends passes
through a :class:`Redactor`, which replaces any path under the server home, the model's folder or the
account's home folder by its last component (``bo.json``, ``llava-tiny``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

_PATH_TAIL = r"[^\s'\"(),;]*"


def _variants(path: str | Path) -> set[str]:
    text = str(path).rstrip("/")
    out = {text}
    if text:
        try:
            out.add(str(Path(text).expanduser().resolve()))
        except (OSError, RuntimeError):
            pass
    return {v for v in out if len(v) > 1 and os.sep in v}


class Redactor:
    def __init__(self, paths: Iterable[str | Path | None]):
        prefixes = set()
        for p in paths:
            if p:
                prefixes |= _variants(p)
        ordered = sorted(prefixes, key=len, reverse=True)  # the longest (most specific) prefix wins
        self._pattern = re.compile("|".join(re.escape(p) + _PATH_TAIL for p in ordered)) if ordered else None

    def __call__(self, text: str | None) -> str | None:
        if not text or self._pattern is None:
            return text
        return self._pattern.sub(lambda m: Path(m.group(0).rstrip("/.:")).name or "(server path)", text)


def server_redactor(home: Path, model: str | None, model_id: str | None) -> Redactor:
    """The paths one server must not show: its home, the model's local folder, the account's home."""
    paths: list[str | Path | None] = [home, Path.home()]
    for m in (model, model_id):
        if m and (os.sep in m or Path(m).exists()):
            paths.append(m)
    return Redactor(paths)
