"""Who is in this photo? Visual signatures of concepts, a FAISS index over them, retrieve-then-verify.

A concept may carry a **visual signature** in its own files (checked by ``concepts/schema.py``):

- ``prototype`` (d,): the L2-normalised mean of its training photos' pooled embedder features (the image
  pool's embedder: EfficientNet-Lite0 by default);
- ``head.weight`` (d,), ``head.bias`` (1,): a logistic-regression concept head on the same features,
  training photos vs pool negatives (nearest pool photos + random ones), MyVLM-style; without a pool,
  a prototype head (a logistic on the cosine to the prototype, threshold from the training photos);
- ``meta["visual"]``: the embedder id, ``dim``, and how the head was made (its threshold, counts, seconds).

Fitting one takes about a second, so a concept recognises the moment it is created (``stage:
"recognition"``), long before its tokens are trained (``stage: "trained"``).

Every recognition answer says which **mode** produced it:

- ``head``: sigmoid(w·x + b) against the head's threshold;
- ``yollava``: the language model's P(yes) for the paper's recognition query, against the concept's
  calibrated threshold;
- ``fused``: the mean of the two calibrated log-odds margins, through a sigmoid, against 0.5;
- ``auto`` (default): ``head`` while a concept's tokens are untrained, :data:`DEFAULT_TRAINED_MODE` for a
  trained concept with a signature (chosen by ``benchmarks/who.py``, see docs/who.md), ``yollava`` for a
  concept made before signatures existed.

:func:`who` answers "who is in this photo?" over every loaded and stored concept: a FAISS inner-product
index over the prototypes retrieves the ``top_k`` nearest concepts, a second one over the heads (``[w, b]``
against ``[x, 1]``) the ``top_k`` highest-scoring ones; the union (about ``top_k + 1`` concepts) is verified
by each candidate's own score (the language model's yes-probabilities batched, one photo, prompt
prefix reused); concepts without a signature are always verified; ``strategy="all"`` verifies every
concept (the exact reference).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from .concepts import Concept, load_concept, save_concept
from .concepts.io import concept_stamp
from .engine import Recognition
from .errors import ConceptNotReadyError, UnknownConceptError, YollavaError

log = logging.getLogger(__name__)

MODES = ("auto", "head", "yollava", "fused")
#: the mode ``auto`` uses for a trained concept that has a head: the better one on MyVLM (benchmarks/who.py,
#: docs/who.md; on `pocket` the head, see there). Concepts without a signature always use ``yollava``.
DEFAULT_TRAINED_MODE = "head"
#: where the library keeps concepts whose head is ready but whose tokens are still training
PENDING_DIR = ".pending"
#: how many candidates the prototype index hands to verification
DEFAULT_TOP_K = 5
#: the concept head's recipe, chosen on a development split (benchmarks/who_head.py, docs/who.md): 3 augmented
#: views of each photo as extra positives, and "present" from P >= 0.6 (with multi-crop query views)
DEFAULT_HEAD_VIEWS = 3
DEFAULT_HEAD_THRESHOLD = 0.6
_EPS = 1e-6


# ---- embedder ------------------------------------------------------------------------------
def embedder_id(embedder) -> str:
    from .data.pool import embedder_name

    return embedder_name(embedder)


_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DEFAULT_EMBEDDER: list = []
_EMBEDDER_LOCK = threading.Lock()


def default_embedder():
    """The image pool's default embedder (EfficientNet-Lite0), loaded once per process."""
    with _EMBEDDER_LOCK:
        if not _DEFAULT_EMBEDDER:
            from .data.pool import default_embedder as make

            _DEFAULT_EMBEDDER.append(make())
        return _DEFAULT_EMBEDDER[0]


def set_embedder(engine, embedder) -> None:
    """Use ``embedder`` (anything with ``embed(list[PIL.Image]) -> (n, d)`` and a ``fingerprint``) for
    ``engine``'s signatures and queries instead of the default one."""
    _EMBEDDERS[engine] = embedder
    _INDEXES.pop(engine, None)


def embedder_for(engine) -> Any:
    return _EMBEDDERS.get(engine) or default_embedder()


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(np.atleast_2d(np.asarray(v, dtype=np.float32)))
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def embed_images(embedder, images: Sequence[str | Path | Image.Image]) -> np.ndarray:
    """(n, d) L2-normalised features of photos (paths or PIL images); unreadable files raise InvalidImageError."""
    from .images import load_image

    if not images:
        return np.zeros((0, 0), np.float32)
    pil = [load_image(im) for im in images]
    v = embedder.embed(pil)
    v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    return _normalise(v)


def query_views(image) -> list[Image.Image]:
    """The views a photo is looked at in: the whole photo (the embedder centre-crops it), squares covering
    it edge to edge when it is wide or tall (a centre crop would cut the sides off), and the four corners
    at 60 % of each side (a subject that fills only part of the photo). A concept's head answers with its
    best view, so two subjects in one photo can both be found."""
    from .images import load_image

    im = load_image(image)
    w, h = im.size
    views = [im]
    if max(w, h) >= 1.3 * min(w, h):
        side, long = min(w, h), max(w, h)
        n = math.ceil(long / side)
        step = (long - side) / max(1, n - 1)
        for i in range(n):
            o = round(i * step)
            views.append(im.crop((o, 0, o + side, h)) if w > h else im.crop((0, o, w, o + side)))
    cw, ch = max(1, int(w * 0.6)), max(1, int(h * 0.6))
    views += [im.crop((x, y, x + cw, y + ch)) for x in (0, w - cw) for y in (0, h - ch)]
    return views


def embed_query(embedder, image, multi_crop: bool = True) -> np.ndarray:
    """(views, d) features of a photo to recognise in (one row without ``multi_crop``)."""
    return embed_images(embedder, query_views(image) if multi_crop else [image])


# ---- the signature -------------------------------------------------------------------------
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
        from .data.augment import augmented_view
        from .images import load_image

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


# ---- the index -----------------------------------------------------------------------------
class PrototypeIndex:
    """Vectors in a FAISS inner-product index, by concept name: prototypes (L2-normalised: cosine), or
    with ``normalise=False`` concept heads as ``[w, b]`` (searched with ``[x, 1]``: the head's logit).
    ``add`` replaces a name's vector, ``remove`` drops it; ``len(index) == index.ntotal`` always."""

    def __init__(self, dim: int, normalise: bool = True):
        self.dim = dim
        self.normalise = normalise
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, name: str) -> bool:
        return name in self._ids

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def names(self) -> list[str]:
        return list(self._ids)

    def add(self, name: str, prototype: np.ndarray) -> None:
        v = _normalise(prototype) if self.normalise else np.ascontiguousarray(np.atleast_2d(np.asarray(prototype, np.float32)))
        if v.shape[1] != self.dim:
            raise ValueError(f"prototype of <{name}> has {v.shape[1]} values, the index {self.dim}")
        self.remove(name)
        i = self._next
        self._next += 1
        self._index.add_with_ids(v, np.array([i], dtype=np.int64))
        self._ids[name], self._names[i] = i, name

    def remove(self, name: str) -> bool:
        i = self._ids.pop(name, None)
        if i is None:
            return False
        del self._names[i]
        self._index.remove_ids(np.array([i], dtype=np.int64))
        return True

    def search(self, x: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest prototypes to one query vector, best first: ``[(name, cosine)]``."""
        if not self._ids or k <= 0:
            return []
        q = _normalise(x) if self.normalise else np.ascontiguousarray(np.atleast_2d(np.asarray(x, np.float32)))
        scores, ids = self._index.search(q, min(k, len(self._ids)))
        return [(self._names[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if int(i) in self._names]


@dataclass
class _Entry:
    name: str
    concept: Concept
    signature: VisualSignature | None
    stage: str
    stamp: Any


Loader = Callable[[Path, str], Concept]


class ConceptIndex:
    """The concepts one ``who`` considers and their prototypes, kept equal to its sources by :meth:`sync`.

    Sources map a name to a loaded :class:`Concept` or to the folder holding ``NAME.json``; a folder's
    files are re-read only when they change (size, mtime, inode)."""

    def __init__(self, embedder_id: str, loader: Loader):
        self.embedder_id = embedder_id
        self.loader = loader
        self.entries: dict[str, _Entry] = {}
        self.index: PrototypeIndex | None = None  # prototypes (cosine)
        self.heads: PrototypeIndex | None = None  # concept heads as [w, b] (their logit)
        self.lock = threading.Lock()
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def sync(self, sources: dict[str, Concept | Path]) -> list[tuple[str, str]]:
        """Add, replace and drop entries so they match ``sources``; returns ``[(name, error)]`` for files
        that could not be read (they are left out, never fatal)."""
        errors = []
        with self.lock:
            for name in [n for n in self.entries if n not in sources]:
                self._drop(name)
            for name, src in sources.items():
                if isinstance(src, Concept):
                    stamp = ("loaded", id(src))
                    if name in self.entries and self.entries[name].stamp == stamp and self.entries[name].concept is src:
                        continue
                    concept = src
                else:
                    stamp = _stamp(Path(src), name)
                    if stamp is None:
                        self._drop(name)
                        continue
                    if name in self.entries and self.entries[name].stamp == stamp:
                        continue
                    try:
                        concept = self.loader(Path(src), name)
                    except (YollavaError, OSError, ValueError) as e:
                        self._drop(name)
                        errors.append((name, str(e)))
                        continue
                self._put(name, concept, stamp)
        return errors

    def _put(self, name: str, concept: Concept, stamp) -> None:
        sig = VisualSignature.from_concept(concept)
        if sig is not None and sig.embedder != self.embedder_id:
            if name not in self._warned:
                log.warning("<%s>'s visual signature was made with %s, not %s: it is verified without retrieval", name, sig.embedder, self.embedder_id)
                self._warned.add(name)
            sig = None
        if sig is not None:
            if self.index is None:
                self.index, self.heads = PrototypeIndex(sig.dim), PrototypeIndex(sig.dim + 1, normalise=False)
            if sig.dim != self.index.dim:
                sig = None
        self.entries[name] = _Entry(name, concept, sig, concept_stage(concept), stamp)
        if sig is not None:
            self.index.add(name, sig.prototype)
            if sig.has_head:
                self.heads.add(name, np.append(sig.head_weight, np.float32(sig.head_bias)))
            else:
                self.heads.remove(name)
        elif self.index is not None:
            self.index.remove(name)
            self.heads.remove(name)

    def _drop(self, name: str) -> None:
        self.entries.pop(name, None)
        if self.index is not None:
            self.index.remove(name)
            self.heads.remove(name)

    def without_signature(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.signature is None]

    def retrieve(self, x: np.ndarray | None, k: int) -> list[tuple[str, float | None]]:
        """Candidates: the ``k`` nearest prototypes and the ``k`` concepts whose heads score ``x`` highest (two
        FAISS searches; usually overlapping), then every concept without a signature. ``[(name, cosine)]``."""
        hits: list[tuple[str, float | None]] = []
        if self.index is not None and x is not None:
            views = _normalise(x)
            for index, queries in ((self.index, views), (self.heads, np.hstack([views, np.ones((len(views), 1), np.float32)]))):
                best: dict[str, float] = {}  # each concept's best view
                for q in queries:
                    for n, score in index.search(q, k):
                        best[n] = max(score, best.get(n, -np.inf))
                for n in sorted(best, key=lambda n: (-best[n], n))[:k]:
                    if n not in {h for h, _ in hits}:
                        hits.append((n, self.entries[n].signature.similarity(views)))
        return hits + [(n, None) for n in self.without_signature()]


# ---- scoring --------------------------------------------------------------------------------
def _logit(p: float) -> float:
    p = min(max(float(p), _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def margin(p: float, threshold: float) -> float:
    """Calibrated log-odds margin: > 0 exactly when ``p`` is above ``threshold``."""
    return _logit(p) - _logit(threshold)


def fuse(p_head: float, t_head: float, p_llm: float, t_llm: float) -> tuple[float, float]:
    """The fused score: the mean of the head's and the language model's calibrated log-odds margins, through a
    sigmoid; returns (p, threshold 0.5)."""
    return _sigmoid(0.5 * (margin(p_head, t_head) + margin(p_llm, t_llm))), 0.5


def resolve_mode(mode: str, stage: str, signature: VisualSignature | None) -> str:
    """The mode one concept answers in (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown recognition mode {mode!r}; choose from {', '.join(MODES)}")
    has_head = signature is not None and signature.has_head
    if stage == "recognition":
        if not has_head:
            raise ConceptNotReadyError("this concept has neither trained tokens nor a visual head")
        return "head"
    if not has_head:
        return "yollava"
    if mode == "auto":
        return DEFAULT_TRAINED_MODE
    return mode


@dataclass
class Found(Recognition):
    """One verified concept: ``p_yes`` and ``threshold`` in the answering ``mode``; ``score`` is the calibrated
    log-odds margin (> 0: present), ``similarity`` the prototype cosine (None: not retrieved by prototype)."""

    score: float = 0.0
    similarity: float | None = None
    stage: str = "trained"

    def as_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "identifier": f"<{self.concept}>", "answer": self.answer, "present": self.present,
                "p_yes": round(self.p_yes, 6), "threshold": round(self.threshold, 6), "mode": self.mode,
                "score": round(self.score, 4), "similarity": None if self.similarity is None else round(self.similarity, 4),
                "stage": self.stage}


@dataclass
class WhoResult:
    """``found``: the concepts present, best first; ``checked``: every verified candidate, best first."""

    found: list[Found]
    checked: list[Found]
    strategy: str
    n_concepts: int
    seconds: dict[str, float] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.found)

    def __len__(self) -> int:
        return len(self.found)

    @property
    def names(self) -> list[str]:
        return [f.concept for f in self.found]


def score_candidates(engine, image, candidates: list[tuple[_Entry, float | None]], x: np.ndarray | None, mode: str = "auto",
                     threshold: float | None = None, batch_size: int = 8, llm_lock=None) -> list[Found]:
    """Verify candidates on one photo: heads on the features ``x``, the language model's P(yes) for the
    ones whose mode needs it (one batched pass with the photo's prefix reused)."""
    plan = [(e, sim, resolve_mode(mode, e.stage, e.signature)) for e, sim in candidates]
    llm = [e for e, _, m in plan if m in ("yollava", "fused")]
    p_llm: dict[str, float] = {}
    if llm:
        with (llm_lock if llm_lock is not None else _NoLock()):
            image = engine.encode_image(image)  # once for every batch
            cache: dict = {}
            for i in range(0, len(llm), batch_size):  # only one batch's concepts in the bank at a time
                chunk = llm[i : i + batch_size]
                with loaded(engine, [e.concept for e in chunk]):
                    probs = engine.concept_yes_probabilities(image, [e.name for e in chunk], batch_size=batch_size, prefix_cache=cache)
                p_llm.update(zip([e.name for e in chunk], probs))
    out = []
    for e, sim, m in plan:
        sig = e.signature
        if m == "head":
            p, t = sig.photo_probability(x), sig.head_threshold
        elif m == "yollava":
            p, t = p_llm[e.name], e.concept.threshold
        else:
            p, t = fuse(sig.photo_probability(x), sig.head_threshold, p_llm[e.name], e.concept.threshold)
        if threshold is not None:
            t = threshold
        out.append(Found(e.name, "Yes" if p >= t else "No", p, t, m, margin(p, t), sim, e.stage))
    out.sort(key=lambda f: (-f.score, f.concept))
    return out


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class loaded:
    """Put concepts into ``engine``'s bank for a ``with`` block; the ones it did not hold are taken out after."""

    def __init__(self, engine, concepts: Sequence[Concept]):
        self.engine, self.concepts, self.added = engine, concepts, []

    def __enter__(self):
        for c in self.concepts:
            if c.name in self.engine.bank:
                if self.engine.bank[c.name] is c:
                    continue
                raise UnknownConceptError(f"another concept named <{c.name}> is loaded")
            self.engine.bank.add(c)
            self.added.append(c.name)
        return self

    def __exit__(self, *exc):
        for name in reversed(self.added):
            if name in self.engine.bank:
                self.engine.unload_concept(name)
        return False


# ---- the library's view: the engine's loaded and stored concepts ------------------------------
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def library_loader(engine) -> Loader:
    fingerprint = engine.fingerprint()

    def load(folder: Path, name: str) -> Concept:
        c = load_concept(folder, name, fingerprint).to(device=engine.adapter.device, dtype=engine.adapter.dtype)
        for p in c.parameters():
            p.requires_grad_(False)
        return c

    return load


def stored_sources(folder: Path) -> dict[str, Path]:
    """``NAME -> folder`` for every concept in ``folder``, and in its ``.pending`` folder for names not (yet)
    trained there."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    pending = folder / PENDING_DIR
    for d in (folder, pending):
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                out.setdefault(p.stem, d)
    return out


def library_sources(engine, include_stored: bool = True) -> dict[str, Concept | Path]:
    src: dict[str, Concept | Path] = dict(stored_sources(engine.concepts_dir)) if include_stored else {}
    for name in engine.bank.names():  # a loaded concept wins over its file
        src[name] = engine.bank[name]
    return src


def index_for(engine) -> ConceptIndex:
    idx = _INDEXES.get(engine)
    eid = embedder_id(embedder_for(engine))
    if idx is None or idx.embedder_id != eid:
        idx = ConceptIndex(eid, library_loader(engine))
        _INDEXES[engine] = idx
    return idx


def who_in(index: ConceptIndex, engine, embedder, image, *, mode: str = "auto", strategy: str = "retrieve",
           top_k: int = DEFAULT_TOP_K, threshold: float | None = None, batch_size: int = 8, llm_lock=None,
           features: np.ndarray | None = None, multi_crop: bool = True) -> WhoResult:
    """:func:`who` over an already synced index (the server keeps one per user). ``features``: the photo's
    views' features if already computed (:func:`embed_query`)."""
    if strategy not in ("retrieve", "all"):
        raise ValueError("strategy must be 'retrieve' (retrieve-then-verify) or 'all' (verify every concept)")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    with index.lock:
        need_x = any(e.signature is not None for e in index.entries.values())
    x = None
    if need_x:
        x = _normalise(features) if features is not None else embed_query(embedder, image, multi_crop)
    t1 = time.perf_counter()
    seconds["embed"] = t1 - t0
    with index.lock:  # another request may be syncing the same index
        entries = dict(index.entries)
        if strategy == "all":
            sims = {}
            if x is not None:
                sims = {n: e.signature.similarity(x) for n, e in entries.items() if e.signature is not None}
            cands = [(e, sims.get(n)) for n, e in entries.items()]
        else:
            cands = [(entries[n], s) for n, s in index.retrieve(x, top_k) if n in entries]
    t2 = time.perf_counter()
    seconds["retrieve"] = t2 - t1
    checked = score_candidates(engine, image, cands, x, mode, threshold, batch_size, llm_lock) if cands else []
    seconds["verify"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return WhoResult([f for f in checked if f.present], checked, strategy, len(entries), seconds)


def who(engine, image, *, mode: str = "auto", strategy: str = "retrieve", top_k: int = DEFAULT_TOP_K,
        threshold: float | None = None, include_stored: bool = True, batch_size: int = 8, multi_crop: bool = True) -> WhoResult:
    """Every loaded (and, with ``include_stored``, stored) concept present in ``image``, best first.

    ``strategy="retrieve"``: the ``top_k`` concepts whose prototypes are nearest the photo and the ``top_k``
    whose heads score it highest (plus every concept without a signature) are verified; ``"all"``: every
    concept is (the exact reference). ``multi_crop``: look at the photo in several views (:func:`query_views`;
    heads and retrieval use each concept's best view; the language model sees the whole photo)."""
    index = index_for(engine)
    errors = index.sync(library_sources(engine, include_stored))
    for name, err in errors:
        log.warning("skipping concept <%s>: %s", name, err)
    return who_in(index, engine, embedder_for(engine), image, mode=mode, strategy=strategy, top_k=top_k,
                  threshold=threshold, batch_size=batch_size, multi_crop=multi_crop)


def recognize(engine, name: str, image, *, mode: str = "auto", threshold: float | None = None) -> Found:
    """Is ``<name>`` in ``image``? Like ``engine.recognize``, in any mode, also for a concept whose head is
    ready but whose tokens are still training (the answer says the mode)."""
    index = index_for(engine)
    src = library_sources(engine)
    if name not in src:
        raise UnknownConceptError(f"unknown concept <{name}>: not loaded, and not in {engine.concepts_dir}")
    errors = [(n, e) for n, e in index.sync(src) if n == name]
    if name not in index.entries:
        raise UnknownConceptError(errors[0][1] if errors else f"unknown concept <{name}>")
    e = index.entries[name]
    m = resolve_mode(mode, e.stage, e.signature)
    x = embed_query(embedder_for(engine), image) if m in ("head", "fused") else None
    return score_candidates(engine, image, [(e, None)], x, mode, threshold)[0]


# ---- chat that knows who is there ---------------------------------------------------------------
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


# ---- instant concepts -----------------------------------------------------------------------------
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


def _stamp(folder: Path, name: str) -> tuple | None:
    """The concept files' stamp, with the folder: the same name in another folder is another concept."""
    stamp = concept_stamp(folder, name)
    return None if stamp is None else (str(folder), *stamp)
