"""Where a score becomes "yes": the one home of every recognition threshold (no torch, no model).

- a trained concept's yes/no threshold is set by :func:`calibrate` from the scores of its calibration samples
  (unused pool photos and unseen views of the user's photos, or held-back photos; see ``data/builder.py``),
  with the rule named by :data:`DEFAULT_RULE`;
- a concept head answers "present" from :data:`HEAD_THRESHOLD`, a fixed value chosen on a development split.

A new rule is a function ``(labels, scores) -> threshold`` added to :data:`THRESHOLD_RULES` (and made the
default there, or asked for by name).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: the concept head's decision threshold on P(present) with multi-crop query views, chosen on a development
#: split of the MyVLM subjects (``benchmarks/who_head.py``, ``benchmarks/results/who/head_dev.json``), never on a reported test set
HEAD_THRESHOLD = 0.6


def weighted_accuracy(labels: Sequence[bool], scores: Sequence[float], threshold: float) -> float:
    """The mean of the positives' and the negatives' accuracy at ``threshold`` (score >= threshold is "yes")."""
    pos = [s >= threshold for s, y in zip(scores, labels) if y]
    neg = [s < threshold for s, y in zip(scores, labels) if not y]
    parts = [sum(v) / len(v) for v in (pos, neg) if v]
    return sum(parts) / len(parts) if parts else 0.0


def best_accuracy_threshold(labels: Sequence[bool], scores: Sequence[float], lo: float = 0.05, hi: float = 0.95) -> float:
    """Of 0.5 and the midpoints between consecutive distinct scores, the one with the best weighted accuracy;
    among equally good ones, the one nearest 0.5; clipped to [lo, hi]. (Negatives at 0.1/0.2 and positives at
    0.9/0.95 give 0.5: every midpoint from 0.15 to 0.9 separates them, and 0.5 is nearest to itself.)"""
    cands = sorted(set(scores))
    mids = [0.5] + [(a + b) / 2 for a, b in zip(cands, cands[1:])]
    best = max(mids, key=lambda t: (weighted_accuracy(labels, scores, t), -abs(t - 0.5)))
    return min(hi, max(lo, best))


#: name -> rule(labels, scores) -> threshold
THRESHOLD_RULES: dict[str, Callable[[Sequence[bool], Sequence[float]], float]] = {"best-accuracy": best_accuracy_threshold}
DEFAULT_RULE = "best-accuracy"


def calibrate(labels: Sequence[bool], scores: Sequence[float], rule: str = DEFAULT_RULE) -> float:
    """The yes/no threshold for these calibration scores (0.5 when there are none)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    if not len(scores):
        return 0.5
    return float(THRESHOLD_RULES[rule](labels, scores))


#: below these on its calibration samples, a trained concept's language-model recognition is called weak
WEAK_WEIGHTED_ACCURACY, WEAK_AUC = 0.75, 0.80


def calibration_advice(name: str, holdout: dict, n_photos: int, recipe: str) -> str | None:
    """What to tell the person who made concept ``name`` when its calibration scores are weak (None when they are not):
    what it means for them and the next step that helps."""
    acc, auc = holdout.get("weighted_accuracy"), holdout.get("auc")
    weak = (acc is not None and acc < WEAK_WEIGHTED_ACCURACY) or (auc is not None and auc < WEAK_AUC)
    if not weak:
        return None
    scores = ", ".join(f"{label} {value:.2f}" for label, value in (("weighted accuracy", acc), ("AUC", auc)) if value is not None)
    steps = [f"more and more varied photos (you gave {n_photos}; 5-10 from different days and angles work best)"]
    if recipe not in ("accurate", "paper"):
        steps.append("--recipe accurate (3 epochs, about 3x the training time)")
    return (f"<{name}> tells itself apart poorly on its calibration photos ({scores}; 0.50 is chance). Recognition still "
            f"works through its concept head (`yollava recognize`, mode auto), but chat may not recognise <{name}> in a photo. "
            f"What helps: {'; '.join(steps)}.")
