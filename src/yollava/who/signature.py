"""A concept's visual signature: its prototype and concept head (logistic regression on the embedder's
features, MyVLM-style; a prototype head without a pool), fitted in about a second, stored in its files."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..concepts import Concept
from .embedding import _normalise, embed_images, embedder_id

#: the concept head's recipe, chosen on a development split (benchmarks/who_head.py, benchmarks/results/who/head_dev.json): 3 augmented
#: views of each photo as extra positives, and "present" from P >= 0.6 (with multi-crop query views)
DEFAULT_HEAD_VIEWS = 3
DEFAULT_HEAD_THRESHOLD = 0.6


@dataclass
class VisualSignature:
    embedder: str
    prototype: np.ndarray  # (d,), unit norm
    head_weight: np.ndarray | None = None  # (d,)
    head_bias: float | None = None
    head_threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.prototype.shape[0])

    @property
    def has_head(self) -> bool:
        return self.head_weight is not None

    def head_probability(self, x: np.ndarray) -> np.ndarray:
        """P(present) of the head for features ``x`` (n, d) (already normalised)."""
        z = np.atleast_2d(x) @ self.head_weight + float(self.head_bias)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def photo_probability(self, views: np.ndarray) -> float:
        """P(present) in a photo given its views' features (:func:`query_views`): the best view's."""
        return float(self.head_probability(views).max())

    def similarity(self, views: np.ndarray) -> float:
        """Cosine of the prototype to the photo's most similar view."""
        return float((np.atleast_2d(views) @ self.prototype).max())

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"prototype": torch.from_numpy(np.asarray(self.prototype, np.float32).copy())}
        if self.has_head:
            out["head.weight"] = torch.from_numpy(np.asarray(self.head_weight, np.float32).copy())
            out["head.bias"] = torch.tensor([float(self.head_bias)], dtype=torch.float32)
        return out

    def meta(self) -> dict[str, Any]:
        head = {"threshold": float(self.head_threshold), **self.info.get("head", {})} if self.has_head else None
        out = {"embedder": self.embedder, "dim": self.dim, **{k: v for k, v in self.info.items() if k != "head"}}
        if head is not None:
            out["head"] = head
        return out

    @classmethod
    def from_concept(cls, concept: Concept) -> VisualSignature | None:
        t = getattr(concept, "extra_tensors", {}) or {}
        visual = concept.meta.get("visual")
        if "prototype" not in t or not isinstance(visual, dict):
            return None
        head = visual.get("head") if isinstance(visual.get("head"), dict) else {}
        has_head = "head.weight" in t
        return cls(
            embedder=str(visual.get("embedder")),
            prototype=_normalise(t["prototype"].float().numpy())[0],
            head_weight=t["head.weight"].float().numpy().astype(np.float32) if has_head else None,
            head_bias=float(t["head.bias"].float()[0]) if has_head else None,
            head_threshold=float(head.get("threshold", 0.5)),
            info={**{k: v for k, v in visual.items() if k not in ("embedder", "dim", "head")},
                  "head": {k: v for k, v in head.items() if k != "threshold"}},
        )


def attach_signature(concept: Concept, signature: VisualSignature) -> Concept:
    """Store ``signature`` in the concept (its tensors and ``meta["visual"]``); saved with it."""
    concept.extra_tensors = {k: v for k, v in concept.extra_tensors.items() if k not in ("prototype", "head.weight", "head.bias")}
    concept.extra_tensors.update(signature.tensors())
    concept.meta["visual"] = signature.meta()
    return concept


def concept_stage(concept: Concept) -> str:
    return "recognition" if concept.meta.get("stage") == "recognition" else "trained"


def _prototype_head(x_pos: np.ndarray, prototype: np.ndarray, scale: float = 20.0) -> tuple[np.ndarray, float, float]:
    """Without negatives: a logistic on the cosine to the prototype, centred a little below the least
    similar training photo (leave-one-out); returns (weight, bias, cosine threshold)."""
    if len(x_pos) >= 2:
        loo = [float(x_pos[i] @ _normalise(np.delete(x_pos, i, 0).mean(0))[0]) for i in range(len(x_pos))]
        tau = min(loo) - 0.05
    else:
        tau = 0.8
    tau = float(min(max(tau, 0.3), 0.95))
    return (scale * prototype).astype(np.float32), -scale * tau, tau


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


def fit_signature(photos: Sequence[str | Path | Image.Image], embedder, pool=None, *, n_hard: int = 40, n_easy: int = 60,
                  near_duplicate: float = 0.95, seed: int = 0, exclude: Iterable[str | Path] = (),
                  features: np.ndarray | None = None, views: int = DEFAULT_HEAD_VIEWS, composites: int = 0,
                  threshold: float = DEFAULT_HEAD_THRESHOLD) -> VisualSignature:
    """The prototype and concept head of a subject from its photos (about a second with EfficientNet).

    Negatives come from ``pool`` (an :class:`~yollava.data.pool.ImagePool` made with the same embedder):
    the ``n_hard`` pool photos nearest to the photos (near-duplicates of them skipped) and ``n_easy``
    random ones; ``exclude`` (paths or sha256) are never used. Without a pool the head is a prototype
    head. ``features``: the photos' features if already computed (then no augmentation).

    Augmentation (head only; the prototype is the photos' own mean): ``views`` augmented views per photo
    (crop, mirror, colour jitter: ``data.augment``) as extra positives; ``composites`` per photo: the
    photo pasted onto a random pool photo as a positive, and a pool photo pasted onto another as a
    negative (so pasting itself says nothing). ``threshold``: the logistic head's decision threshold."""
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
        info["augmentation"] = {"views": views, "composites": composites}
    if pool is not None and len(pool) and getattr(pool, "embedder_id", eid) == eid and (n_hard or n_easy):
        from sklearn.linear_model import LogisticRegression

        rows = {e["path"]: i for i, e in enumerate(pool.entries)}
        vectors = pool.vectors()
        excluded = {str(p) for p in exclude} | {str(Path(p).resolve()) for p in photos if not isinstance(p, Image.Image)}
        near = vectors @ x_pos.T  # (n_pool, n_pos)
        dup = set(np.nonzero(near.max(axis=1) > near_duplicate)[0].tolist())
        chosen: list[int] = []
        if n_hard:
            per = max(1, math.ceil(n_hard / len(x_pos)))
            for hits in pool.search(x_pos, per + len(dup) + 8, exclude=excluded):
                kept = [rows[str(p)] for p, _ in hits if rows.get(str(p)) is not None and rows[str(p)] not in dup]
                chosen += [r for r in kept if r not in chosen][:per]
            chosen = chosen[:n_hard]
        n_hard_used = len(chosen)
        if n_easy:
            for p in pool.sample_random(n_easy + len(chosen) + len(dup), seed=seed, exclude=excluded):
                r = rows.get(str(p))
                if r is not None and r not in dup and r not in chosen and len(chosen) < n_hard_used + n_easy:
                    chosen.append(r)
        if chosen:
            x_neg = np.concatenate([vectors[chosen], x_aug_neg])
            pos = np.concatenate([x_pos, x_aug_pos])
            x = np.concatenate([pos, x_neg])
            y = np.array([1] * len(pos) + [0] * len(x_neg))
            clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
            clf.fit(x, y)
            info["head"] = {"kind": "logistic", "n_positive": int(len(pos)), "n_negative": int(len(x_neg)),
                            "n_hard": n_hard_used, "classifier": "LogisticRegression(C=1, class_weight=balanced)",
                            "fit_seconds": round(time.perf_counter() - t0, 3)}
            return VisualSignature(eid, prototype, clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), threshold, info)
    w, b, tau = _prototype_head(x_pos, prototype)
    info["head"] = {"kind": "prototype", "n_positive": int(len(x_pos)), "n_negative": 0, "cosine_threshold": round(tau, 4),
                    "fit_seconds": round(time.perf_counter() - t0, 3)}
    return VisualSignature(eid, prototype, w, b, 0.5, info)
