"""What a concept file may hold: the metadata schema and the checks on its rows.

Both the library's ``load_concept`` and the server's import run every check here before a concept is
used or written, so a file that passes can be listed, loaded, recognised with and chatted with.
Failures are :class:`CorruptConceptError` naming the concept and the problem (never a path).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import CorruptConceptError
from ..safejson import UnsafeJSONError, loads

#: metadata files larger than this are refused (a trained concept's is a few KiB)
MAX_META_BYTES = 1024 * 1024
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FINGERPRINT_TEXT = ("family", "model_id", "config_sha256", "weights_sha256")
_FINGERPRINT_INT = ("vocab_size", "hidden_size")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _optional(meta: dict, key: str, kind: type | tuple, what: str, problems: list[str]) -> Any:
    value = meta.get(key)
    if value is not None and not isinstance(value, kind):
        problems.append(f"{key} must be {what} (got {_show(value)})")
        return None
    return value


def meta_problems(meta: Any) -> list[str]:
    """Every way ``meta`` breaks the schema (empty if it is a valid concept's metadata)."""
    if not isinstance(meta, dict):
        return [f"the metadata must be a JSON object (got {type(meta).__name__})"]
    problems: list[str] = []
    _optional(meta, "name", str, "a string", problems)
    version = meta.get("format_version")
    if version is not None and version != 1:
        problems.append(f"format_version {_show(version)} is not supported (this version reads 1)")
    if "k" in meta and not _count(meta["k"]):
        problems.append(f"k must be a whole number >= 0 (got {_show(meta['k'])})")
    sha = _optional(meta, "tensors_sha256", str, "a hex string", problems)
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        problems.append("tensors_sha256 must be 64 lowercase hex digits")
    base = _optional(meta, "base_model", dict, "an object (the model's fingerprint)", problems)
    for key in _FINGERPRINT_TEXT if base else ():
        if base.get(key) is not None and not isinstance(base[key], str):
            problems.append(f"base_model.{key} must be a string (got {_show(base[key])})")
    for key in _FINGERPRINT_INT if base else ():
        if base.get(key) is not None and not _count(base[key]):
            problems.append(f"base_model.{key} must be a whole number (got {_show(base[key])})")
    if "recognition_threshold" in meta:
        t = meta["recognition_threshold"]
        if not (_number(t) and 0.0 <= t <= 1.0):
            problems.append(f"recognition_threshold must be a finite number from 0 to 1 (got {_show(t)})")
    for key in ("recipe", "data"):
        _optional(meta, key, dict, "an object", problems)
    metrics = _optional(meta, "metrics", dict, "an object", problems)
    if metrics:
        for key, kind, what in (("holdout", dict, "an object"), ("history", list, "a list")):
            _optional(metrics, key, kind, what, problems)
        for key in ("best_epoch", "samples_seen"):
            if metrics.get(key) is not None and not _count(metrics[key]):
                problems.append(f"metrics.{key} must be a whole number (got {_show(metrics[key])})")
    counts = _optional(meta, "counts", dict, "an object", problems)
    if counts and not all(_count(v) for v in counts.values()):
        problems.append("counts must map sample kinds to whole numbers")
    photos = _optional(meta, "source_photos", list, "a list", problems)
    if photos and not all(isinstance(p, dict) and all(isinstance(p.get(k, ""), str) for k in ("file", "sha256")) for p in photos):
        problems.append("source_photos must be a list of {file, sha256} objects")
    return problems


def validate_meta(meta: Any, name: str) -> dict[str, Any]:
    """``meta`` if it is a valid concept's metadata, else :class:`CorruptConceptError` listing the problems."""
    problems = meta_problems(meta)
    if problems:
        raise CorruptConceptError(f"concept <{name}>: invalid metadata: " + "; ".join(problems[:5]))
    return meta


def parse_meta(data: bytes, name: str, max_bytes: int = MAX_META_BYTES) -> dict[str, Any]:
    """Bytes of ``NAME.json`` -> validated metadata (size, nesting, finite numbers, Unicode, schema)."""
    if len(data) > max_bytes:
        raise CorruptConceptError(f"concept <{name}>: metadata is {len(data):,} bytes; at most {max_bytes:,} are allowed")
    try:
        meta = loads(data, what="metadata")
    except UnsafeJSONError as e:
        raise CorruptConceptError(f"concept <{name}>: {e}") from None
    return validate_meta(meta, name)


def check_rows(name: str, input_rows: Any, output_row: Any, hidden_size: int | None = None, max_k: int | None = None) -> None:
    """The rows of a concept: float tensors ``(k+1, hidden)`` and ``(hidden,)``, every value finite."""
    def bad(msg: str):
        raise CorruptConceptError(f"concept <{name}>: {msg}")

    for key, t in (("input_rows", input_rows), ("output_row", output_row)):
        if not isinstance(t, torch.Tensor):
            bad(f"{key} is not a tensor")
        if t.dtype not in FLOAT_DTYPES:
            bad(f"{key} has dtype {str(t.dtype).replace('torch.', '')}; it must be float16, bfloat16, float32 or float64")
    if input_rows.dim() != 2 or input_rows.shape[0] < 1 or input_rows.shape[1] < 1:
        bad(f"input_rows must be a (k+1, hidden) matrix, got shape {tuple(input_rows.shape)}")
    hidden = input_rows.shape[1]
    if output_row.shape != (hidden,):
        bad(f"output_row must have shape ({hidden},), got {tuple(output_row.shape)}")
    if hidden_size is not None and hidden != hidden_size:
        bad(f"the rows have size {hidden}, the model's hidden size is {hidden_size}")
    if max_k is not None and input_rows.shape[0] - 1 > max_k:
        bad(f"k = {input_rows.shape[0] - 1} latent tokens; at most {max_k} are allowed")
    for key, t in (("input_rows", input_rows), ("output_row", output_row)):
        if not bool(torch.isfinite(t).all()):
            bad(f"{key} holds NaN or infinite values")
