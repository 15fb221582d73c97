"""The concept head: a linear classifier on a photo's features that says "this subject is here", MyVLM-style.

One class for every head in the project: a concept's visual signature (:mod:`.signature`), the ``head``
baseline of the evaluation and the diagnostic probes (``yollava.eval.probes``) all fit and score with it,
so the reported head numbers are the product's. Plain numpy arrays; fitted with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibration import HEAD_THRESHOLD

#: how every logistic head is fitted (the weights are folded into one ``weight`` vector and ``bias``)
CLASSIFIER = "LogisticRegression(C=1, class_weight=balanced)"


@dataclass
class ConceptHead:
    """P(present | features x) = sigmoid(weight . x + bias); "present" from ``threshold``."""

    weight: np.ndarray  # (d,)
    bias: float
    threshold: float = HEAD_THRESHOLD
    info: dict[str, Any] = field(default_factory=dict)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(present) for features ``x`` (n, d) or (d,), as a vector of n."""
        z = np.atleast_2d(x) @ self.weight + float(self.bias)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    @classmethod
    def fit(cls, positives: np.ndarray, negatives: np.ndarray, *, threshold: float = HEAD_THRESHOLD,
            standardize: bool = False, **info: Any) -> ConceptHead:
        """Logistic regression, positives vs negatives, classes weighted equally. ``standardize``: features are
        scaled per dimension (on all the fitting rows) first; the scaling is folded into the weights."""
        from sklearn.linear_model import LogisticRegression

        if not len(positives) or not len(negatives):
            raise ValueError(f"a concept head needs positives and negatives (got {len(positives)} and {len(negatives)})")
        x = np.concatenate([positives, negatives]).astype(np.float64)
        y = np.array([1] * len(positives) + [0] * len(negatives))
        mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        if standardize:
            mean, scale = x.mean(0), x.std(0)
            scale[scale == 0] = 1.0
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit((x - mean) / scale, y)
        weight = clf.coef_[0] / scale
        bias = float(clf.intercept_[0] - weight @ mean)
        return cls(weight.astype(np.float32), bias, threshold,
                   {"kind": "logistic", "n_positive": int(len(positives)), "n_negative": int(len(negatives)),
                    "classifier": CLASSIFIER + (" on standardised features" if standardize else ""), **info})

    @classmethod
    def from_prototype(cls, positives: np.ndarray, prototype: np.ndarray, scale: float = 20.0) -> ConceptHead:
        """Without negatives: a logistic on the cosine to ``prototype``, centred a little below the least similar
        training photo (leave-one-out), so the threshold is 0.5."""
        from .embedding import _normalise

        if len(positives) >= 2:
            loo = [float(positives[i] @ _normalise(np.delete(positives, i, 0).mean(0))[0]) for i in range(len(positives))]
            tau = min(loo) - 0.05
        else:
            tau = 0.8
        tau = float(min(max(tau, 0.3), 0.95))
        return cls((scale * prototype).astype(np.float32), -scale * tau, 0.5,
                   {"kind": "prototype", "n_positive": int(len(positives)), "n_negative": 0, "cosine_threshold": round(tau, 4)})
