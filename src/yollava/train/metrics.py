"""Recognition metrics: the paper's weighted accuracy and the yes-probability ROC-AUC."""

from __future__ import annotations

from collections.abc import Sequence


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def recognition_metrics(labels: Sequence[bool], scores: Sequence[float], threshold: float = 0.5) -> dict:
    pos = [s >= threshold for s, y in zip(scores, labels) if y]
    neg = [s < threshold for s, y in zip(scores, labels) if not y]
    pos_acc = sum(pos) / len(pos) if pos else None
    neg_acc = sum(neg) / len(neg) if neg else None
    parts = [a for a in (pos_acc, neg_acc) if a is not None]
    return {
        "positive_accuracy": pos_acc,
        "negative_accuracy": neg_acc,
        "weighted_accuracy": sum(parts) / len(parts) if parts else None,
        "auc": roc_auc(labels, scores),
        "n_positive": len(pos),
        "n_negative": len(neg),
        "threshold": threshold,
    }

