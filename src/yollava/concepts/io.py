"""Concept files: ``NAME.safetensors`` (the rows) + ``NAME.json`` (metadata). Never pickle.

Writes are atomic: both files are written under temporary names, fsynced and renamed into place,
tensors first and metadata last. The JSON records the sha256 of the tensor file, so a pair left
inconsistent by a crash between the two renames is detected on load, not silently used.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ConceptMismatchError, CorruptConceptError, UnknownConceptError
from ..images import file_sha256
from .concept import Concept, validate_name

FORMAT_VERSION = 1


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result to ``path`` in one rename; no half file survives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


def concept_paths(folder: str | Path, name: str) -> tuple[Path, Path]:
    folder = Path(folder)
    validate_name(name)
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def save_concept(concept: Concept, folder: str | Path, fingerprint: dict[str, Any]) -> Path:
    tensors_path, meta_path = concept_paths(folder, concept.name)
    tensors = {
        "input_rows": concept.input_rows.detach().cpu().contiguous(),
        "output_row": concept.output_row.detach().cpu().contiguous(),
    }
    atomic_write(tensors_path, lambda p: save_file(tensors, str(p), metadata={"name": concept.name}))
    meta = {
        **concept.meta,
        "format_version": FORMAT_VERSION,
        "name": concept.name,
        "k": concept.k,
        "base_model": fingerprint,
        "tensors_sha256": file_sha256(tensors_path),
    }
    atomic_write_json(meta_path, meta)
    concept.meta = {k: v for k, v in meta.items() if k not in ("format_version", "tensors_sha256")}
    return meta_path


def read_meta(folder: str | Path, name: str) -> dict[str, Any]:
    _, meta_path = concept_paths(folder, name)
    if not meta_path.exists():
        raise UnknownConceptError(f"no concept <{name}> in {Path(folder)}")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CorruptConceptError(f"{meta_path}: metadata is not valid JSON ({e})") from None


def check_fingerprint(meta: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    trained_for = meta.get("base_model", {})
    keys = ("family", "config_sha256", "weights_sha256", "vocab_size", "hidden_size")
    if any(trained_for.get(k) != fingerprint.get(k) for k in keys):
        raise ConceptMismatchError(
            f"concept <{meta.get('name')}> was trained for base model {trained_for.get('model_id')!r} "
            f"({trained_for.get('family')}, config {trained_for.get('config_sha256')}, weights {trained_for.get('weights_sha256')}), "
            f"but the loaded model is {fingerprint.get('model_id')!r} ({fingerprint.get('family')}, config "
            f"{fingerprint.get('config_sha256')}, weights {fingerprint.get('weights_sha256')}); "
            "retrain the concept for this model"
        )


def load_concept(folder: str | Path, name: str, fingerprint: dict[str, Any] | None = None) -> Concept:
    tensors_path, meta_path = concept_paths(folder, name)
    meta = read_meta(folder, name)
    if fingerprint is not None:
        check_fingerprint(meta, fingerprint)
    if not tensors_path.exists():
        raise CorruptConceptError(f"{tensors_path} is missing (metadata {meta_path} exists)")
    if meta.get("tensors_sha256") and file_sha256(tensors_path) != meta["tensors_sha256"]:
        raise CorruptConceptError(f"{tensors_path} does not match the hash recorded in {meta_path}")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as e:
        raise CorruptConceptError(f"{tensors_path}: not a readable safetensors file ({e})") from None
    if set(tensors) != {"input_rows", "output_row"}:
        raise CorruptConceptError(f"{tensors_path}: unexpected tensors {sorted(tensors)}")
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "tensors_sha256")}
    return Concept(name, tensors["input_rows"], tensors["output_row"], meta)


def list_concepts(folder: str | Path) -> list[dict[str, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for meta_path in sorted(folder.glob("*.json")):
        try:
            out.append(read_meta(folder, meta_path.stem))
        except (CorruptConceptError, ValueError):
            out.append({"name": meta_path.stem, "error": "unreadable metadata"})
    return out


def delete_concept(folder: str | Path, name: str) -> None:
    tensors_path, meta_path = concept_paths(folder, name)
    if not meta_path.exists() and not tensors_path.exists():
        raise UnknownConceptError(f"no concept <{name}> in {Path(folder)}")
    for p in (meta_path, tensors_path):  # metadata first: a half-deleted concept is invisible, not broken
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def to_device(concept: Concept, device: torch.device, dtype: torch.dtype) -> Concept:
    return concept.to(device=device, dtype=dtype)
