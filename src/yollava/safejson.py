"""JSON from untrusted sources: bounded nesting, finite numbers only, valid Unicode text.

``json.loads`` recurses once per nesting level (a document 5,000 levels deep raises ``RecursionError``),
turns ``NaN``, ``Infinity`` and ``1e400`` into non-finite floats, and accepts escaped lone surrogates
(``"\\ud800"``) that cannot be encoded again. :func:`loads` refuses all three with a clear
:class:`UnsafeJSONError` (a ``ValueError``) before anything downstream sees the data.

The nesting is measured before parsing by :func:`json_shape`: one pass over the bytes in 1 MiB chunks of
numpy operations, so its time is linear in the size whatever the text holds (a regex over the strings
took quadratic time on an unterminated string of escapes: 15 s for 80 KB of ``\\"``), and other threads
run between the chunks.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

#: deeper than any document this project reads or writes (concept metadata is 4 levels deep)
DEFAULT_MAX_DEPTH = 32
_CHUNK = 1 << 20
_QUOTE, _BACKSLASH = 34, 92
#: +1 for ``[`` and ``{``, -1 for ``]`` and ``}``, 0 for ``,``; ``_MARKS``: the bytes that count
_STEP = np.zeros(256, np.int8)
_STEP[[91, 123]] = 1
_STEP[[93, 125]] = -1
_MARKS = np.zeros(256, bool)
_MARKS[[91, 123, 93, 125, 44]] = True
_INDEX = np.arange(_CHUNK, dtype=np.int32)


class UnsafeJSONError(ValueError):
    pass


def json_shape(data: bytes | str) -> tuple[int, int]:
    """``(depth, values)`` of a JSON text: how deeply ``[`` / ``{`` nest and how many values its arrays and
    objects hold (commas + 1), brackets and commas inside strings not counted. No recursion, no regex:
    linear time for any input (for text that is not JSON the numbers are only estimates, and the parser
    refuses it anyway)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    view = np.frombuffer(data, np.uint8)
    depth = deepest = commas = 0
    in_string, backslashes = False, 0  # carried from one chunk to the next: inside a string? backslashes at the end?
    for start in range(0, len(view), _CHUNK):
        b = view[start : start + _CHUNK]
        n = len(b)
        quotes = np.flatnonzero(b == _QUOTE)
        escapes = b == _BACKSLASH
        if escapes.any():
            # the index of the last byte at or before i that is not a backslash (-1: none since the chunk began)
            last_plain = np.maximum.accumulate(np.where(escapes, -1, _INDEX[:n]))
            if len(quotes):
                before = last_plain[np.maximum(quotes - 1, 0)].astype(np.int64)
                run = np.where(quotes == 0, backslashes, np.where(before < 0, quotes + backslashes, quotes - 1 - before))
                quotes = quotes[run % 2 == 0]  # a quote after an odd number of backslashes is part of the string
            end = int(last_plain[-1])
            backslashes = n - 1 - end + (backslashes if end < 0 else 0)
        else:
            if backslashes % 2 and len(quotes) and quotes[0] == 0:
                quotes = quotes[1:]
            backslashes = 0
        marks = np.flatnonzero(_MARKS[b])
        if len(marks):
            if len(quotes) or in_string:
                marks = marks[(np.searchsorted(quotes, marks) + in_string) % 2 == 0]
            steps = _STEP[b[marks]]
            commas += len(steps) - int(np.count_nonzero(steps))
            if len(steps):
                path = depth + np.cumsum(steps, dtype=np.int64)
                deepest = max(deepest, int(path.max()))
                depth = int(path[-1])
        in_string ^= bool(len(quotes) % 2)
    return deepest, commas + 1


def nesting_depth(text: str | bytes) -> int:
    """How deeply ``[`` / ``{`` nest in ``text`` (brackets inside strings do not count); linear time."""
    return json_shape(text)[0]


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


def loads(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH, what: str = "the JSON", max_values: int | None = None) -> Any:
    """Parse ``data`` (UTF-8 bytes or text); :class:`UnsafeJSONError` saying why if it is not safe JSON.
    ``max_values``: refuse, before parsing, a text whose arrays and objects hold more values than this."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnsafeJSONError(f"{what} is not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
        depth, values = json_shape(data)
    else:
        text = data
        depth, values = json_shape(text)
    if depth > max_depth:
        raise UnsafeJSONError(f"{what} is nested {depth} levels deep; at most {max_depth} are allowed")
    if max_values is not None and values > max_values:
        raise UnsafeJSONError(f"{what} holds more than {max_values:,} values")
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
