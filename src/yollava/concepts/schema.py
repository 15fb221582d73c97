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
#: optional tensors beside the rows: the concept's visual signature (see ``yollava.who``)
VISUAL_TENSORS = ("prototype", "head.weight", "head.bias")
#: the output rows of a Yo'Chameleon concept's latent tokens (:mod:`yollava.concepts.unified`)
LATENT_OUTPUT = "latent_output_rows"
#: the largest magnitude a value of a concept's rows may have. Trained rows stay far below it (at most 0.21 over
#: the 229 concepts in benchmarks/results); a value within it stays finite in every dtype a model runs in
#: (float16 included), and so do the logits of its output row. A float64 1e300 is finite, but infinite as
#: float32, and every recognition and chat with it failed.
MAX_ROW_VALUE = 100.0
#: the same for the visual signature (the prototype is a unit vector; a concept head's weights are tens at most)
MAX_VISUAL_VALUE = 10_000.0
#: ``stage``: "recognition" = only the visual signature is usable yet (rows untrained); "trained" = both
STAGES = ("recognition", "trained")
#: ``injection``: where the latents enter a prompt. "prompt" (Yo'LLaVA, the default): ``<bo> is <bo_1>...<bo_k>.``
#: before the question; "vision" (MyVLM, recipe ``myvlm``): straight after a photo's visual tokens, and only when the
#: concept head says the subject is in that photo (:attr:`yollava.engine.Engine.photo_gate`)
INJECTIONS = ("prompt", "vision")
#: ``reading``: how the yes/no about the concept is read from a photo. "whole" (the default): the language model's
#: P(yes) on the whole photo; "views": the largest P(yes) over the photo's views (:func:`yollava.images.photo_views`),
#: as a concept head reads its photo — a subject that fills only part of the frame is seen larger in a corner view
READINGS = ("whole", "views")


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
    if "k" in meta and not (_count(meta["k"]) and meta["k"] >= 1):
        problems.append(f"k must be a whole number >= 1 (got {_show(meta['k'])})")
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
    if meta.get("stage") is not None and meta["stage"] not in STAGES:
        problems.append(f"stage must be one of {', '.join(STAGES)} (got {_show(meta['stage'])})")
    if meta.get("reading") is not None and meta["reading"] not in READINGS:
        problems.append(f"reading must be one of {', '.join(READINGS)} (got {_show(meta['reading'])})")
    if meta.get("injection") is not None and meta["injection"] not in INJECTIONS:
        problems.append(f"injection must be one of {', '.join(INJECTIONS)} (got {_show(meta['injection'])})")
    visual = _optional(meta, "visual", dict, "an object (the visual signature's description)", problems)
    if visual:
        if not isinstance(visual.get("embedder"), str) or not visual["embedder"]:
            problems.append("visual.embedder must be a non-empty string (the embedder's id)")
        if not (_count(visual.get("dim")) and visual["dim"] >= 1):
            problems.append(f"visual.dim must be a whole number >= 1 (got {_show(visual.get('dim'))})")
        head = _optional(visual, "head", dict, "an object", problems)
        if head and "threshold" in head and not (_number(head["threshold"]) and 0.0 <= head["threshold"] <= 1.0):
            problems.append(f"visual.head.threshold must be a finite number from 0 to 1 (got {_show(head['threshold'])})")
    if "unified" in meta:  # a Yo'Chameleon concept: its generation and understanding token sets
        from .unified import token_sets_problems

        problems += token_sets_problems(meta["unified"], meta["k"] if _count(meta.get("k")) else None)
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
    if input_rows.shape[0] < 2:
        bad("k = 0 latent tokens; a concept has at least 1 (<name> is <name_1>...<name_k>)")
    hidden = input_rows.shape[1]
    if output_row.shape != (hidden,):
        bad(f"output_row must have shape ({hidden},), got {tuple(output_row.shape)}")
    if hidden_size is not None and hidden != hidden_size:
        bad(f"the rows have size {hidden}, the model's hidden size is {hidden_size}")
    if max_k is not None and input_rows.shape[0] - 1 > max_k:
        bad(f"k = {input_rows.shape[0] - 1} latent tokens; at most {max_k} are allowed")
    for key, t in (("input_rows", input_rows), ("output_row", output_row)):
        problem = value_problem(key, t, MAX_ROW_VALUE)
        if problem:
            bad(problem)


def value_problem(key: str, t: torch.Tensor, bound: float) -> str | None:
    """Why the values of ``t`` are unusable (NaN, infinite, or larger than ``bound`` in magnitude), or None."""
    if not bool(torch.isfinite(t).all()):
        return f"{key} holds NaN or infinite values"
    if t.numel():
        largest = float(t.detach().abs().max())
        if largest > bound:
            return f"{key} holds a value of magnitude {largest:.3g}; at most {bound:g} is allowed (a trained concept's values are far smaller)"
    return None


def check_visual(name: str, tensors: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
    """The optional visual tensors of a concept file: only ``prototype`` (d,) with a non-zero norm,
    ``head.weight`` (d,) and ``head.bias`` (1,), float and finite; a head needs a prototype; when present
    they need ``meta["visual"]`` naming the embedder, with ``dim == d``."""
    def bad(msg: str):
        raise CorruptConceptError(f"concept <{name}>: {msg}")

    extra = {k: v for k, v in tensors.items() if k not in ("input_rows", "output_row")}
    if LATENT_OUTPUT in extra:  # a Yo'Chameleon concept's latent output rows: (k, hidden), finite
        latent = extra.pop(LATENT_OUTPUT)
        rows = tensors.get("input_rows")
        if meta is not None and "unified" not in meta:
            bad(f"{LATENT_OUTPUT} belongs to a concept with generation tokens, but the metadata has no 'unified'")
        if not isinstance(latent, torch.Tensor) or latent.dtype not in FLOAT_DTYPES:
            bad(f"{LATENT_OUTPUT} must be a float tensor")
        if isinstance(rows, torch.Tensor) and tuple(latent.shape) != (rows.shape[0] - 1, rows.shape[1]):
            bad(f"{LATENT_OUTPUT} must have shape ({rows.shape[0] - 1}, {rows.shape[1]}), got {tuple(latent.shape)}")
        problem = value_problem(LATENT_OUTPUT, latent, MAX_ROW_VALUE)
        if problem:
            bad(problem)
    elif meta is not None and "unified" in meta:
        bad(f"the metadata describes generation tokens ('unified') but the file holds no {LATENT_OUTPUT}")
    unknown = sorted(set(extra) - set(VISUAL_TENSORS))
    if unknown:
        bad(f"expected the tensors input_rows and output_row (and optionally {', '.join(VISUAL_TENSORS)}), found unexpected {unknown[:4]}")
    if not extra:
        return
    for key, t in extra.items():
        if not isinstance(t, torch.Tensor):
            bad(f"{key} is not a tensor")
        if t.dtype not in FLOAT_DTYPES:
            bad(f"{key} has dtype {str(t.dtype).replace('torch.', '')}; it must be float16, bfloat16, float32 or float64")
        problem = value_problem(key, t, MAX_VISUAL_VALUE)
        if problem:
            bad(problem)
    proto = extra.get("prototype")
    if proto is None:
        bad("head.weight/head.bias need a prototype tensor")
    if proto.dim() != 1 or proto.shape[0] < 1:
        bad(f"prototype must be a vector (d,), got shape {tuple(proto.shape)}")
    if float(proto.float().norm()) < 1e-6:
        bad("prototype is all zeros")
    d = proto.shape[0]
    if ("head.weight" in extra) != ("head.bias" in extra):
        bad("head.weight and head.bias come together")
    if "head.weight" in extra:
        if tuple(extra["head.weight"].shape) != (d,):
            bad(f"head.weight must have shape ({d},), got {tuple(extra['head.weight'].shape)}")
        if tuple(extra["head.bias"].shape) != (1,):
            bad(f"head.bias must have shape (1,), got {tuple(extra['head.bias'].shape)}")
    if meta is not None:
        visual = meta.get("visual")
        if not isinstance(visual, dict) or not isinstance(visual.get("embedder"), str):
            bad("the file holds a visual signature but its metadata names no visual.embedder")
        if visual.get("dim") != d:
            bad(f"metadata says visual.dim = {visual.get('dim')}, the prototype has {d} values")
