"""Concept files: ``NAME.safetensors`` (the rows) + ``NAME.json`` (metadata). Never pickle.

Writes are atomic: both files are written under temporary names, fsynced and renamed into place,
tensors first and metadata last. The JSON records the sha256 of the tensor file, so a pair left
inconsistent by a crash between the two renames is detected on load, not silently used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ..errors import ConceptMismatchError, CorruptConceptError, UnknownConceptError, YollavaError
from ..safejson import finite_copy
from .concept import Concept, validate_name
from .schema import MAX_META_BYTES, check_rows, check_visual, parse_meta, validate_meta
from .unified import LATENT_OUTPUT, UnifiedConcept

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


def concept_stamp(folder: str | Path, name: str) -> tuple | None:
    """What changes when a concept's files change (mtime, size, inode of both); ``None`` if either is missing.
    Caches of loaded concepts compare it to know when to re-read."""
    try:
        a, b = os.stat(Path(folder) / f"{name}.json"), os.stat(Path(folder) / f"{name}.safetensors")
    except FileNotFoundError:
        return None
    return (a.st_mtime_ns, a.st_size, a.st_ino, b.st_mtime_ns, b.st_size, b.st_ino)


def save_concept(concept: Concept, folder: str | Path, fingerprint: dict[str, Any]) -> Path:
    """Write the concept's two files; its metadata is checked against the schema first, so nothing is
    written that :func:`load_concept` would refuse (non-finite numbers in the metadata become null)."""
    tensors_path, meta_path = concept_paths(folder, concept.name)
    tensors = {
        "input_rows": concept.input_rows.detach().cpu().contiguous(),
        "output_row": concept.output_row.detach().cpu().contiguous(),
    }
    check_rows(concept.name, tensors["input_rows"], tensors["output_row"])
    tensors.update({k: v.detach().float().cpu().contiguous() for k, v in getattr(concept, "extra_tensors", {}).items()})
    if isinstance(concept, UnifiedConcept):  # the latent tokens' output rows (self-prompting)
        tensors[LATENT_OUTPUT] = concept.latent_output_rows.detach().cpu().contiguous()
    meta = {**concept.meta, "format_version": FORMAT_VERSION, "name": concept.name, "k": concept.k, "base_model": fingerprint}
    text = json.dumps(finite_copy(meta), indent=2, sort_keys=True, default=str, allow_nan=False)
    check_visual(concept.name, tensors, parse_meta(text.encode(), concept.name))  # refuse before writing anything
    blob = save(tensors, metadata={"name": concept.name})
    meta = json.loads(text)
    meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write(tensors_path, lambda p: p.write_bytes(blob))
    atomic_write_json(meta_path, meta)
    concept.meta = {k: v for k, v in meta.items() if k not in ("format_version", "tensors_sha256")}
    return meta_path


def damaged_message(name: str) -> str:
    return (f"concept <{name}> is damaged: {name}.safetensors, the file with its rows, is missing (its metadata exists); "
            "delete the concept and train or import it again")


def read_meta(folder: str | Path, name: str, max_bytes: int = MAX_META_BYTES) -> dict[str, Any]:
    """The concept's metadata, checked against the schema (:class:`CorruptConceptError` if it fails, or if the
    concept's tensor file is missing beside it: the concept is damaged)."""
    tensors_path, meta_path = concept_paths(folder, name)
    try:
        size = meta_path.stat().st_size
    except FileNotFoundError:
        raise UnknownConceptError(f"no concept <{name}> in {Path(folder)}") from None
    if not tensors_path.is_file():
        raise CorruptConceptError(damaged_message(name))
    if size > max_bytes:
        raise CorruptConceptError(f"concept <{name}>: metadata is {size:,} bytes; at most {max_bytes:,} are allowed")
    return parse_meta(meta_path.read_bytes(), name, max_bytes)


def check_fingerprint(meta: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    trained_for = meta.get("base_model") if isinstance(meta.get("base_model"), dict) else {}
    # pocket: the projector + LoRA the concept was trained through (a concept made before the hash existed has
    # none and is judged by the other keys, which cover the same weights less precisely)
    mine, theirs = fingerprint.get("pocket_weights_sha256"), trained_for.get("pocket_weights_sha256")
    if mine is not None and theirs is not None and mine != theirs:
        old, new = trained_for.get("pocket_version", 1), fingerprint.get("pocket_version", 1)
        if old != new:
            name = meta.get("name")
            model = "pocket-v1" if old == 1 else "pocket"  # v1 stays loadable by name; newer ones ship as "pocket"
            raise ConceptMismatchError(
                f"concept <{name}> was trained on pocket v{old}, but the loaded model is pocket v{new}. Use it as it is with "
                f"--model {model} (Python: YoLLaVA.from_pretrained({model!r})), or retrain it on v{new} from its photos: "
                f"yollava personalize {name} PHOTOS... --overwrite"
            )
        raise ConceptMismatchError(
            f"concept <{meta.get('name')}> was trained for pocket weights {theirs}, but the loaded pocket has weights "
            f"{mine} (pocket_weights_sha256: the projector and LoRA, YOLLAVA_POCKET_WEIGHTS or the shipped ones); "
            "load the weights it was trained for, or retrain the concept"
        )
    keys = ("family", "config_sha256", "weights_sha256", "vocab_size", "hidden_size")
    if any(trained_for.get(k) != fingerprint.get(k) for k in keys):
        raise ConceptMismatchError(
            f"concept <{meta.get('name')}> was trained for base model {trained_for.get('model_id')!r} "
            f"({trained_for.get('family')}, config {trained_for.get('config_sha256')}, weights {trained_for.get('weights_sha256')}), "
            f"but the loaded model is {fingerprint.get('model_id')!r} ({fingerprint.get('family')}, config "
            f"{fingerprint.get('config_sha256')}, weights {fingerprint.get('weights_sha256')}); "
            "retrain the concept for this model"
        )


def concept_from_bytes(
    name: str,
    meta: dict[str, Any] | bytes,
    tensor_bytes: bytes,
    fingerprint: dict[str, Any] | None = None,
    max_k: int | None = None,
    max_meta_bytes: int = MAX_META_BYTES,
) -> Concept:
    """A concept from the contents of its two files, every check done (nothing touches the disk):
    metadata schema, base model, recorded tensor hash, tensor names, shapes, dtypes and finite values."""
    validate_name(name)
    meta = parse_meta(meta, name, max_meta_bytes) if isinstance(meta, (bytes, bytearray)) else validate_meta(meta, name)
    if fingerprint is not None:
        check_fingerprint(meta, fingerprint)
    if meta.get("tensors_sha256") and hashlib.sha256(tensor_bytes).hexdigest() != meta["tensors_sha256"]:
        raise CorruptConceptError(f"concept <{name}>: the tensor file does not match the hash recorded in its metadata")
    try:
        tensors = load(bytes(tensor_bytes))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise CorruptConceptError(f"concept <{name}>: the tensor file is not a readable safetensors file ({e.__class__.__name__})") from None
    if not {"input_rows", "output_row"} <= set(tensors):
        shown = sorted(tensors)[:4]
        raise CorruptConceptError(f"concept <{name}>: expected the tensors input_rows and output_row, found {shown}")
    hidden = fingerprint.get("hidden_size") if fingerprint else None
    check_rows(name, tensors["input_rows"], tensors["output_row"], hidden_size=hidden, max_k=max_k)
    check_visual(name, tensors, meta)
    if "k" in meta and meta["k"] != tensors["input_rows"].shape[0] - 1:
        raise CorruptConceptError(f"concept <{name}>: metadata says k = {meta['k']}, the rows hold {tensors['input_rows'].shape[0] - 1}")
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "tensors_sha256")}
    extra = {k: v for k, v in tensors.items() if k not in ("input_rows", "output_row", LATENT_OUTPUT)}
    if "unified" in meta:
        return UnifiedConcept(name, tensors["input_rows"], tensors["output_row"], meta, extra, tensors.get(LATENT_OUTPUT))
    return Concept(name, tensors["input_rows"], tensors["output_row"], meta, extra)


def load_concept(folder: str | Path, name: str, fingerprint: dict[str, Any] | None = None) -> Concept:
    tensors_path, _ = concept_paths(folder, name)
    meta = read_meta(folder, name)
    if fingerprint is not None:
        check_fingerprint(meta, fingerprint)
    try:
        blob = tensors_path.read_bytes()
    except FileNotFoundError:
        raise CorruptConceptError(damaged_message(name)) from None
    return concept_from_bytes(name, meta, blob, fingerprint)


def list_concepts(folder: str | Path) -> list[dict[str, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for meta_path in sorted(folder.glob("*.json")):
        try:
            out.append(read_meta(folder, meta_path.stem))
        except (YollavaError, ValueError, OSError) as e:  # one bad file never hides the others
            out.append({"name": meta_path.stem, "error": str(e) if isinstance(e, YollavaError) else "unreadable metadata"})
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
