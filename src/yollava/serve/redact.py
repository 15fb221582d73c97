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
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

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


_ABSOLUTE = re.compile(r"(?:/|~/|[A-Za-z]:[\\/]|\\\\)[^\n]*")


def without_paths(obj: Any, redact: Redactor | None = None) -> Any:
    """``obj`` (metadata: dicts, lists, strings) with every string that is an absolute path replaced by its last
    component (``/srv/yollava/models/llava-tiny`` -> ``llava-tiny``) and, with ``redact``, the server's paths
    inside other strings too. What a concept carries off the server names models and pools, not folders."""
    if isinstance(obj, str):
        if _ABSOLUTE.fullmatch(obj):
            path = PureWindowsPath(obj) if ("\\" in obj or obj[1:2] == ":") else PurePosixPath(obj)
            return path.name or "(path)"
        return redact(obj) if redact is not None else obj
    if isinstance(obj, dict):
        return {k: without_paths(v, redact) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_paths(v, redact) for v in obj]
    return obj


def server_redactor(home: Path, model: str | None, model_id: str | None) -> Redactor:
    """The paths one server must not show: its home, the model's local folder, the account's home."""
    paths: list[str | Path | None] = [home, Path.home()]
    for m in (model, model_id):
        if m and (os.sep in m or Path(m).exists()):
            paths.append(m)
    return Redactor(paths)
