"""Which pool photos a concept learns "not this" from: the one home of negative selection.

Used by the training-set builder (the language model's negatives), the concept head (``who``'s visual
signature) and the evaluation datasets (test negatives taken out of the pool). Every kind of negative
skips the subject's own photos, byte-identical copies of them (sha256) and **near-duplicates**: pool
photos whose embedding cosine to any of them is above :data:`NEAR_DUPLICATE`.

- **hard**: for each positive, the ``m = ceil(n_hard / n_photos)`` most similar pool photos; the photos
  take turns, so a pool photo near two positives goes to the first and the other gets its next nearest;
  never a photo twice (by path or content);
- **easy**: random pool photos among those left;
- **calibration**: never trained on, to set a threshold: half the next-nearest to the positives' mean,
  half random.

A new way to pick hard negatives is a new function here, chosen by :func:`choose_negatives`' ``hard_rule``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .training_set import HardNegative

#: a pool photo at least this similar (cosine) to a positive counts as a copy of it, never as a negative
NEAR_DUPLICATE = 0.95


@dataclass
class Negatives:
    hard: list[HardNegative] = field(default_factory=list)
    easy: list[Path] = field(default_factory=list)
    calibration: list[Path] = field(default_factory=list)

    @property
    def trained(self) -> list[Path]:
        """The negatives a concept trains on: hard ones first, then easy ones."""
        return [h.path for h in self.hard] + list(self.easy)


def near_duplicates(pool, vectors: np.ndarray, cut: float = NEAR_DUPLICATE) -> set[str]:
    """Paths of the pool photos more similar than ``cut`` to any of ``vectors`` (n, d), unit-norm."""
    if not len(pool) or not len(vectors):
        return set()
    sims = pool.vectors() @ np.atleast_2d(vectors).T
    return {pool.entries[row]["path"] for row in np.nonzero(sims.max(axis=1) > cut)[0]}


def nearest(pool, vector: np.ndarray, exclude: frozenset[str], start: int) -> Iterator[tuple[Path, float]]:
    """Pool photos by decreasing similarity to ``vector`` (searching deeper when the first ``start`` run out)."""
    k, done = max(start, 1), 0
    while True:
        hits = pool.search(vector, k, exclude=exclude)[0]
        yield from hits[done:]
        if len(hits) < k:
            return
        done, k = len(hits), k * 2


def round_robin_hard(pool, positives: list[Path], vectors: np.ndarray, n_hard: int, banned: set[str]) -> list[HardNegative]:
    """Each positive in turn takes its nearest pool photo not yet taken, ``ceil(n_hard / n_photos)`` rounds."""
    m = math.ceil(n_hard / len(positives))
    sha = {e["path"]: e["sha256"] for e in pool.entries}
    streams = [nearest(pool, vec, frozenset(banned), start=m * len(positives)) for vec in vectors]
    chosen: list[HardNegative] = []
    taken: set[str] = set()  # paths and contents already chosen
    for _ in range(m):
        for anchor, stream in zip(positives, streams):
            for path, score in stream:
                if str(path) not in taken and sha[str(path)] not in taken:
                    chosen.append(HardNegative(path, score, anchor))
                    taken.update((str(path), sha[str(path)]))
                    break
    return chosen


#: name -> rule(pool, positive paths, their vectors, n_hard, banned paths/sha256s) -> hard negatives
HARD_RULES: dict[str, Callable[..., list[HardNegative]]] = {"round-robin": round_robin_hard}


def choose_negatives(pool, positives: list[Path], vectors: np.ndarray, *, n_hard: int = 0, n_easy: int = 0,
                     n_calibration: int = 0, seed: int = 0, positive_sha256: list[str] = (),
                     exclude: set[str] = frozenset(), near_duplicate: float = NEAR_DUPLICATE,
                     hard_rule: str = "round-robin") -> Negatives:
    """Hard negatives first, then easy ones among what is left, then calibration photos (module docstring).
    ``vectors``: the positives' pool-embedder features (unit norm); ``exclude``: paths or sha256s never used."""
    if hard_rule not in HARD_RULES:
        raise ValueError(f"unknown hard-negative rule {hard_rule!r}; known: {', '.join(HARD_RULES)}")
    banned: set[str] = {str(p) for p in positives} | set(positive_sha256) | set(exclude)
    banned |= near_duplicates(pool, vectors, near_duplicate)
    out = Negatives()
    if n_hard > 0 and len(pool):
        out.hard = HARD_RULES[hard_rule](pool, positives, vectors, n_hard, banned)
        sha = {e["path"]: e["sha256"] for e in pool.entries}
        banned |= {str(h.path) for h in out.hard} | {sha[str(h.path)] for h in out.hard}
    if n_easy > 0:
        out.easy = pool.sample_random(n_easy, seed=seed, exclude=banned)
        banned |= {str(p) for p in out.easy}
    if n_calibration > 0:
        n_near = n_calibration // 2
        for path, _ in nearest(pool, vectors.mean(axis=0, keepdims=True), frozenset(banned), start=n_near):
            if len(out.calibration) >= n_near:
                break
            out.calibration.append(Path(path))
        banned |= {str(p) for p in out.calibration}
        out.calibration += pool.sample_random(n_calibration - len(out.calibration), seed=seed + 1, exclude=banned)
    return out


def nearest_to_each(pool, vectors: np.ndarray, n: int, banned: set[str], near_duplicate: float = NEAR_DUPLICATE) -> list[Path]:
    """The ``n`` pool photos most similar to the closest of ``vectors`` (not near-duplicates, not ``banned``)."""
    score = (pool.vectors() @ np.atleast_2d(vectors).T).max(axis=1)
    order = [i for i in np.argsort(-score) if score[i] <= near_duplicate and pool.entries[i]["path"] not in banned]
    return [Path(pool.entries[i]["path"]) for i in order[:n]]

