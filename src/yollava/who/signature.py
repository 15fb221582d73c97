"""A concept's visual signature: its prototype and concept head (:class:`~.head.ConceptHead` on the embedder's
features, MyVLM-style; a prototype head without a pool), fitted in about a second, stored in its files."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..calibration import HEAD_THRESHOLD
from ..concepts import Concept
from .embedding import _normalise, embed_images, embedder_id
from .head import ConceptHead

#: the concept head's recipe, chosen on a development split (benchmarks/who_head.py, benchmarks/results/who/head_dev.json): 3 augmented
#: views of each photo as extra positives (and "present" from :data:`~yollava.calibration.HEAD_THRESHOLD`)
DEFAULT_HEAD_VIEWS = 3
#: negatives of a concept head: the pool photos nearest to the subject's photos, and random ones
DEFAULT_HEAD_HARD, DEFAULT_HEAD_EASY = 40, 60


@dataclass
class VisualSignature:
    embedder: str
    prototype: np.ndarray  # (d,), unit norm
    head: ConceptHead | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.prototype.shape[0])

    def photo_probability(self, views: np.ndarray) -> float:
        """P(present) in a photo given its views' features (:func:`query_views`): the best view's."""
        return float(self.head.probability(views).max())

    def similarity(self, views: np.ndarray) -> float:
        """Cosine of the prototype to the photo's most similar view."""
        return float((np.atleast_2d(views) @ self.prototype).max())

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"prototype": torch.from_numpy(np.asarray(self.prototype, np.float32).copy())}
        if self.head is not None:
            out["head.weight"] = torch.from_numpy(np.asarray(self.head.weight, np.float32).copy())
            out["head.bias"] = torch.tensor([float(self.head.bias)], dtype=torch.float32)
        return out

    def meta(self) -> dict[str, Any]:
        out = {"embedder": self.embedder, "dim": self.dim, **self.info}
        if self.head is not None:
            out["head"] = {"threshold": float(self.head.threshold), **self.head.info}
        return out

    @classmethod
    def from_concept(cls, concept: Concept) -> VisualSignature | None:
        t = getattr(concept, "extra_tensors", {}) or {}
        visual = concept.meta.get("visual")
        if "prototype" not in t or not isinstance(visual, dict):
            return None
        meta = visual.get("head") if isinstance(visual.get("head"), dict) else {}
        head = None
        if "head.weight" in t:
            head = ConceptHead(t["head.weight"].float().numpy().astype(np.float32), float(t["head.bias"].float()[0]),
                               float(meta.get("threshold", 0.5)), {k: v for k, v in meta.items() if k != "threshold"})
        return cls(embedder=str(visual.get("embedder")), prototype=_normalise(t["prototype"].float().numpy())[0], head=head,
                   info={k: v for k, v in visual.items() if k not in ("embedder", "dim", "head")})


def attach_signature(concept: Concept, signature: VisualSignature) -> Concept:
    """Store ``signature`` in the concept (its tensors and ``meta["visual"]``); saved with it."""
    concept.extra_tensors = {k: v for k, v in concept.extra_tensors.items() if k not in ("prototype", "head.weight", "head.bias")}
    concept.extra_tensors.update(signature.tensors())
    concept.meta["visual"] = signature.meta()
    return concept


def concept_stage(concept: Concept) -> str:
    return "recognition" if concept.meta.get("stage") == "recognition" else "trained"


def composite(subject: Image.Image, background: Image.Image, rng: random.Random, scale: tuple[float, float] = (0.45, 0.7),
              size: int = 336) -> Image.Image:
    """``subject`` shrunk to ``scale`` of the frame and pasted at a random place on ``background`` (square,
    ``size`` px): the subject as one part of a busier photo (augmentation for photos with several subjects)."""
    bg = background.convert("RGB").resize((size, size))
    s = rng.uniform(*scale)
    w, h = subject.size
    k = s * size / max(w, h)
    fg = subject.convert("RGB").resize((max(1, round(w * k)), max(1, round(h * k))))
    bg.paste(fg, (rng.randint(0, size - fg.width), rng.randint(0, size - fg.height)))
    return bg


def fit_signature(photos: Sequence[str | Path | Image.Image], embedder, pool=None, *, n_hard: int = DEFAULT_HEAD_HARD,
                  n_easy: int = DEFAULT_HEAD_EASY, seed: int = 0, exclude: Iterable[str | Path] = (),
                  features: np.ndarray | None = None, views: int = DEFAULT_HEAD_VIEWS, composites: int = 0,
                  threshold: float = HEAD_THRESHOLD, negatives: Sequence[str | Path] = ()) -> VisualSignature:
    """The prototype and concept head of a subject from its photos (about a second with EfficientNet).

    Negatives come from ``pool`` (an :class:`~yollava.data.pool.ImagePool` made with the same embedder), chosen
    by :func:`yollava.data.negatives.choose_negatives`: ``n_hard`` nearest to the photos and ``n_easy`` random
    ones; ``exclude`` (paths or sha256) are never used. Without a pool the head is a prototype head.
    ``features``: the photos' features if already computed (then no augmentation).

    Augmentation (head only; the prototype is the photos' own mean): ``views`` augmented views per photo
    (crop, mirror, colour jitter: ``data.augment``) as extra positives; ``composites`` per photo: the
    photo pasted onto a random pool photo as a positive, and a pool photo pasted onto another as a
    negative (so pasting itself says nothing). ``threshold``: the logistic head's decision threshold.
    ``negatives``: the user's photos without the subject (``personalize --negatives``), each with ``views`` augmented
    views, beside the pool's negatives (used only with a pool)."""
    from ..data.negatives import choose_negatives

    t0 = time.perf_counter()
    eid = embedder_id(embedder)
    x_pos = _normalise(features) if features is not None else embed_images(embedder, photos)
    if not len(x_pos):
        raise ValueError("a visual signature needs at least one photo")
    prototype = _normalise(x_pos.mean(0))[0]
    info: dict[str, Any] = {"photos": int(len(x_pos))}
    x_aug_pos = x_aug_neg = np.zeros((0, x_pos.shape[1]), np.float32)
    if features is None and (views or (composites and pool is not None and len(pool))):
        from ..data.augment import augmented_view
        from ..images import load_image

        rng = random.Random(f"{seed}:composites")
        pil = [load_image(p) for p in photos]
        extra_pos = [augmented_view(im, v, seed=seed * 1000 + i) for i, im in enumerate(pil) for v in range(1, views + 1)]
        extra_neg = []
        if composites and pool is not None and len(pool):
            backs = [load_image(p) for p in pool.sample_random(2 * composites * len(pil) + 1, seed=seed + 17)]
            for i, im in enumerate(pil):
                for j in range(composites):
                    extra_pos.append(composite(im, backs[(i * composites + j) % len(backs)], rng))
                    a, b = backs[(2 * (i * composites + j) + 1) % len(backs)], backs[(2 * (i * composites + j) + 2) % len(backs)]
                    extra_neg.append(composite(a, b, rng))
        if extra_pos:
            x_aug_pos = embed_images(embedder, extra_pos)
        if extra_neg:
            x_aug_neg = embed_images(embedder, extra_neg)
    if len(negatives):
        from ..data.augment import augmented_view
        from ..images import load_image

        given = [load_image(p) for p in negatives]
        given += [augmented_view(im, v, seed=seed * 1000 + 500 + i) for i, im in enumerate(given) for v in range(1, views + 1)]
        x_aug_neg = np.concatenate([x_aug_neg, embed_images(embedder, given)])
        info["given_negatives"] = len(negatives)
        info["augmentation"] = {"views": views, "composites": composites}
    if pool is not None and len(pool) and getattr(pool, "embedder_id", eid) == eid and (n_hard or n_easy):
        rows = {e["path"]: i for i, e in enumerate(pool.entries)}
        paths = [Path(p).resolve() if not isinstance(p, Image.Image) else Path(f"<photo {i}>") for i, p in enumerate(photos)]
        negatives = choose_negatives(pool, paths, x_pos, n_hard=n_hard, n_easy=n_easy, seed=seed,
                                     exclude={str(p) for p in exclude})
        chosen = [rows[str(p)] for p in negatives.trained]
        if chosen:
            head = ConceptHead.fit(np.concatenate([x_pos, x_aug_pos]), np.concatenate([pool.vectors()[chosen], x_aug_neg]),
                                   threshold=threshold, n_hard=len(negatives.hard))
            head.info["fit_seconds"] = round(time.perf_counter() - t0, 3)
            return VisualSignature(eid, prototype, head, info)
    head = ConceptHead.from_prototype(x_pos, prototype)
    head.info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    return VisualSignature(eid, prototype, head, info)
