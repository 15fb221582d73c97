"""The one concept head and the one calibration module: what the signature, the eval baseline and the probes
share, checked against scikit-learn and against hand-worked thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from yollava.calibration import HEAD_THRESHOLD, best_accuracy_threshold, calibrate
from yollava.who import ConceptHead


def _blobs(seed=0, d=6):
    rng = np.random.default_rng(seed)
    pos = rng.normal(1.0, 1.0, (12, d)) * np.linspace(1, 50, d)  # dimensions of very different scales
    neg = rng.normal(-1.0, 1.0, (30, d)) * np.linspace(1, 50, d)
    return pos, neg


@pytest.mark.parametrize("standardize", [False, True])
def test_head_matches_scikit_learn(standardize):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pos, neg = _blobs()
    head = ConceptHead.fit(pos, neg, standardize=standardize)
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
    ref = make_pipeline(StandardScaler(), clf) if standardize else clf
    ref.fit(np.concatenate([pos, neg]), [1] * len(pos) + [0] * len(neg))
    x = np.random.default_rng(1).normal(0, 30, (20, pos.shape[1]))
    assert np.allclose(head.probability(x), ref.predict_proba(x)[:, 1], atol=1e-4)
    assert head.threshold == HEAD_THRESHOLD and head.info["n_positive"] == 12 and head.info["n_negative"] == 30


def test_head_refuses_to_fit_without_negatives():
    with pytest.raises(ValueError, match="positives and negatives"):
        ConceptHead.fit(np.ones((3, 4)), np.zeros((0, 4)))


def test_prototype_head_is_centred_below_the_least_similar_photo():
    pos = np.eye(4)[:3] + 0.5
    pos /= np.linalg.norm(pos, axis=1, keepdims=True)
    proto = pos.mean(0) / np.linalg.norm(pos.mean(0))
    head = ConceptHead.from_prototype(pos, proto)
    assert head.info["kind"] == "prototype" and head.threshold == 0.5
    assert (head.probability(pos) > 0.5).all() and head.probability(-proto)[0] < 0.01


def test_best_accuracy_threshold_prefers_the_separating_value_nearest_one_half():
    # every midpoint from 0.15 to 0.9 separates these; 0.5 is among them and nearest to 0.5
    assert best_accuracy_threshold([False, False, True, True], [0.1, 0.2, 0.9, 0.95]) == 0.5
    # all scores high: the gap between the classes is at 0.85, not 0.5
    assert best_accuracy_threshold([False, False, True, True], [0.7, 0.8, 0.9, 0.95]) == pytest.approx(0.85)
    # clipped to [0.05, 0.95]
    assert best_accuracy_threshold([False, True], [0.97, 0.99]) == 0.95


def test_calibrate_names_its_rule_and_has_a_default_without_scores():
    assert calibrate([], []) == 0.5
    assert calibrate([False, True], [0.7, 0.9]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="unknown threshold rule 'median'.*best-accuracy"):
        calibrate([False, True], [0.1, 0.9], rule="median")


def test_weak_calibration_is_reported_with_the_next_step():
    from yollava.calibration import calibration_advice

    assert calibration_advice("rex", {"weighted_accuracy": 0.9, "auc": 0.95}, 5, "fast") is None
    weak = calibration_advice("rex", {"weighted_accuracy": 0.49, "auc": 0.57}, 5, "fast")
    assert "weighted accuracy 0.49, AUC 0.57" in weak and "you gave 5" in weak and "--recipe accurate" in weak
    assert "--recipe accurate" not in calibration_advice("rex", {"weighted_accuracy": 0.6}, 5, "accurate")
    assert calibration_advice("rex", {}, 5, "fast") is None  # nothing measured: nothing to say
