"""Soft-positive images (Yo'Chameleon): pool photos that look like the subject, drawn as the subject with *fewer* of its
generation tokens.

With 3-5 photos a concept sees too few pictures to learn to draw. Yo'Chameleon retrieves look-alikes, ranks them by
similarity to the positives, and trains each to be reconstructed from a prompt that describes it with part of the
latent tokens: the closer a look-alike, the more tokens (more detail) it gets; the real photos get all of them.

- :func:`retrieve_soft_positives` — the ``n`` pool photos most similar to the closest positive (the pool index's
  embedder; near-duplicates of the positives excluded, as for hard negatives), best first, with their cosine.
- :func:`soft_positive_token_counts` — how many latent tokens each ranked look-alike is described with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .negatives import NEAR_DUPLICATE


def soft_positive_token_counts(n_images: int, k: int) -> list[int]:
    """Latent tokens for each of ``n_images`` look-alikes ranked best first: linear in rank, from ``k - 1`` for the
    closest down to at least 1 (the real photos keep all ``k``, so no look-alike is described as fully as they are)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if n_images <= 0:
        return []
    top = max(1, k - 1)
    return [max(1, math.ceil(top * (n_images - rank) / n_images)) for rank in range(n_images)]


def retrieve_soft_positives(pool, photo_vectors: np.ndarray, n: int, exclude: Sequence[str | Path] = (),
                            near_duplicate: float = NEAR_DUPLICATE) -> list[tuple[Path, float]]:
    """The ``n`` pool photos most similar (cosine) to the closest of the subject's photos (``photo_vectors`` (m, d),
    unit-norm, from the pool's embedder), best first, without near-duplicates of them or ``exclude``."""
    if n <= 0 or not len(pool):
        return []
    score = (pool.vectors() @ np.atleast_2d(photo_vectors).T).max(axis=1)
    banned = {str(p) for p in exclude} | {str(Path(p).resolve()) for p in exclude}
    order = [i for i in np.argsort(-score, kind="stable") if score[i] <= near_duplicate and pool.entries[i]["path"] not in banned]
    return [(Path(pool.entries[i]["path"]), float(score[i])) for i in order[:n]]
