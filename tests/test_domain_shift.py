"""``scripts/domain_shift.py`` reads a recognition run's records: the margins, and weighted accuracy at the concept's
own threshold beside the best threshold on the test photos (the bound that separates the threshold rule from the
ranking)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from domain_shift import shift_rows  # noqa: E402


def _record(subject, threshold, labels, scores, photos=None):
    return {"task": "recognition", "method": "yollava", "subject": subject, "threshold": threshold,
            "photos": photos or [f"{subject}/{i}.jpg" for i in range(len(labels))], "labels": labels, "scores": scores,
            "info": {"holdout": {"labels": [True, True, False, False], "scores": [0.8, 0.7, 0.3, 0.2]}}}


def test_own_and_best_threshold(tmp_path):
    # positives 0.6, 0.7; negatives 0.5, 0.55, 0.2: a threshold of 0.45 lets two negatives through, 0.6 none
    rec = _record("bo", 0.45, [True, True, False, False, False], [0.6, 0.7, 0.5, 0.55, 0.2])
    other = dict(rec, method="head")  # another method's record is not read
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(other) + "\n")
    [row] = shift_rows(tmp_path)
    assert row["weighted_own"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert row["weighted_best"] == 1.0 and 0.55 < row["best_threshold"] <= 0.6
    assert row["cal_pos"] - row["cal_neg"] == pytest.approx(0.5)
    assert row["test_pos"] - row["test_neg"] == pytest.approx(0.65 - 1.25 / 3)


def test_extra_negatives_are_kept_apart(tmp_path):
    rec = _record("bo", 0.5, [True, False, False], [0.9, 0.1, 0.7], photos=["bo/a.jpg", "x/b.jpg", "hard_negatives/c.jpg"])
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + "\n")
    [row] = shift_rows(tmp_path)
    assert row["test_neg"] == pytest.approx(0.1) and row["test_extra"] == pytest.approx(0.7)
    assert row["weighted_own"] == pytest.approx(0.75)  # the extra negative still counts in the run's accuracy
