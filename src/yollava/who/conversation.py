"""Chat that knows who is in the photo, and instant (recognition-only) concepts."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..concepts import Concept, save_concept
from .embedding import embedder_for
from .index import PENDING_DIR, index_for
from .signature import VisualSignature, attach_signature, fit_signature
from .verify import Found, WhoResult, loaded, who


def who_prompt(found: Sequence[Found]) -> tuple[str, list[str]]:
    """The hint put before the question and the concepts to introduce: trained concepts by their
    identifier (their definition comes with them), recognition-only ones by their plain name."""
    if not found:
        return "", []
    trained = [f.concept for f in found if f.stage != "recognition"]
    named = [f"<{f.concept}>" if f.stage != "recognition" else f.concept for f in found]
    return f"In this photo: {', '.join(named)}.", trained


@dataclass
class WhoChat:
    answer: str
    found: list[Found]


def chat(engine, prompt: str, image, *, max_found: int = 3, mode: str = "auto", who_result: WhoResult | None = None,
         **chat_kwargs) -> WhoChat:
    """Answer ``prompt`` about ``image``; when the prompt names no concept, the concepts found in the photo
    are introduced first (their definitions plus "In this photo: <bo>."), RAP-style."""
    if engine.mentioned_concepts(prompt) or chat_kwargs.get("concepts"):
        return WhoChat(engine.chat(prompt, image=image, **chat_kwargs), [])
    result = who_result or who(engine, image, mode=mode)
    found = result.found[:max_found]
    hint, names = who_prompt(found)
    index = index_for(engine)
    concepts = [index.entries[n].concept for n in names if n in index.entries]
    with loaded(engine, concepts):
        answer = engine.chat(f"{hint} {prompt}" if hint else prompt, image=image, concepts=names, **chat_kwargs)
    return WhoChat(answer, found)


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


def signature_for_photos(engine, photos: Sequence[str | Path], pool=None, seed: int = 0) -> VisualSignature:
    """The signature ``personalize`` stores: the engine's embedder; ``pool`` negatives when given."""
    return fit_signature(photos, embedder_for(engine), pool, seed=seed)
