"""Recognition-only ("instant") concepts: a concept's visual signature with placeholder rows, so the concept
recognises from the moment its head is fitted, while its tokens wait for or go through training. ``personalize``
keeps one in ``concepts_dir/.pending`` until the trained concept is saved; the server keeps one per job."""

from __future__ import annotations

import weakref
from pathlib import Path

import torch

from ..concepts import Concept, save_concept
from .index import PENDING_DIR
from .signature import VisualSignature, attach_signature

_ROW_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def instant_concept(engine, name: str, signature: VisualSignature, k: int, seed: int = 0, meta: dict | None = None) -> Concept:
    """A concept that only recognises (``stage: "recognition"``): placeholder rows (the mean embedding plus
    seeded noise, as ``Concept.initialise`` makes them; never used to talk) + the signature."""
    stats = _ROW_STATS.get(engine.adapter)
    if stats is None:
        w = engine.adapter.embed_tokens.weight.detach().float().cpu()
        stats = (w.mean(0), w.std(0), engine.adapter.lm_head.weight.detach().float().cpu().mean(0))
        _ROW_STATS[engine.adapter] = stats
    mean, std, out = stats
    gen = torch.Generator().manual_seed(seed)
    rows = mean + torch.randn(k + 1, mean.shape[0], generator=gen) * std * 0.1
    c = Concept(name, rows, out.clone(), {**(meta or {}), "stage": "recognition"})
    return attach_signature(c, signature)


def save_pending(engine, name: str, signature: VisualSignature, k: int, seed: int = 0, meta: dict | None = None,
                 folder: Path | None = None) -> Path:
    """Write the recognition-only concept to ``concepts_dir/.pending`` (or ``folder``)."""
    c = instant_concept(engine, name, signature, k, seed, meta)
    return save_concept(c, folder or Path(engine.concepts_dir) / PENDING_DIR, engine.fingerprint())


def remove_pending(engine, name: str) -> None:
    for suffix in (".json", ".safetensors"):
        (Path(engine.concepts_dir) / PENDING_DIR / f"{name}{suffix}").unlink(missing_ok=True)
