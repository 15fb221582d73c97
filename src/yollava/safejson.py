"""JSON from untrusted sources: bounded nesting, finite numbers only, valid Unicode text.

``json.loads`` recurses once per nesting level (a document 5,000 levels deep raises ``RecursionError``),
turns ``NaN``, ``Infinity`` and ``1e400`` into non-finite floats, and accepts escaped lone surrogates
(``"\\ud800"``) that cannot be encoded again. :func:`loads` refuses all three with a clear
:class:`UnsafeJSONError` (a ``ValueError``) before anything downstream sees the data.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

#: deeper than any document this project reads or writes (concept metadata is 4 levels deep)
DEFAULT_MAX_DEPTH = 32

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class UnsafeJSONError(ValueError):
    pass


def nesting_depth(text: str) -> int:
    """How deeply ``[`` / ``{`` nest in ``text`` (brackets inside strings do not count); no recursion."""
    if text.count("[") + text.count("{") == 0:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), np.uint8)
    return int(np.cumsum(np.where((codes == 91) | (codes == 123), 1, -1)).max())


def _finite_float(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):
        raise UnsafeJSONError(f"the number {s[:20]} is out of range")
    return x


def _no_constant(s: str):
    raise UnsafeJSONError(f"{s} is not a number (only finite numbers are allowed)")


def check_text(obj: Any, where: str = "") -> None:
    """Raise if any string (key or value) in ``obj`` holds a lone surrogate (it cannot be UTF-8 encoded)."""
    if isinstance(obj, str):
        if not obj.isascii():
            try:
                obj.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsafeJSONError(f"{where or 'a string'} holds an unpaired surrogate (\\ud800-\\udfff): not valid Unicode text") from None
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_text(k, where)
            check_text(v, f"{where}.{k}" if where else str(k)[:40])
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_text(v, f"{where}[{i}]")


def loads(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH, what: str = "the JSON") -> Any:
    """Parse ``data`` (UTF-8 bytes or text); :class:`UnsafeJSONError` saying why if it is not safe JSON."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnsafeJSONError(f"{what} is not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
    else:
        text = data
    depth = nesting_depth(text)
    if depth > max_depth:
        raise UnsafeJSONError(f"{what} is nested {depth} levels deep; at most {max_depth} are allowed")
    try:
        obj = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except UnsafeJSONError as e:
        raise UnsafeJSONError(f"{what}: {e}") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise UnsafeJSONError(f"{what} is not valid JSON ({e})") from None
    check_text(obj, "")
    return obj


def finite_copy(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (for writing strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_copy(v) for v in obj]
    return obj
