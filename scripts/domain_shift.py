"""Is a concept fooled by the kind of photo? Its P(yes) on the photos it was calibrated on vs the test photos.

A concept's threshold is set on calibration samples: unseen views of its own photos (positives) and unused pool photos
(negatives). If the test negatives come from the user's world (the other subjects' photos, taken in the same rooms)
and score higher than the pool photos did, the concept has learned the kind of photo as well as the subject. Per
subject of a recognition run: the mean P(yes) of calibration positives / negatives and of test positives / negatives
(the run's own photos; extra negatives such as MyVLM's COCO hard negatives apart), and each margin (mean positive -
mean negative). Beside them, weighted accuracy at the concept's own threshold and at the threshold that would be
best on the test photos themselves: a bound, not a rule anyone can use — what separates the two is the threshold
rule; what separates the second from 1.0 is the ranking (AUC).

    python scripts/domain_shift.py --run benchmarks/results/eval_myvlm_v2_session12/results.run \
        --out benchmarks/results/domain_shift_myvlm_v2.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from yollava.calibration import weighted_accuracy
from yollava.eval.store import read_records


def shift_rows(run: Path, method: str = "yollava", extra: str = "hard_negatives") -> list[dict]:
    rows = []
    for r in read_records(run / "records.jsonl"):
        held = (r.get("info") or {}).get("holdout") or {}
        if r.get("method") != method or "scores" not in r or not held:
            continue
        cal_y, cal_s = np.array(held["labels"], bool), np.array(held["scores"])
        y, s = np.array(r["labels"], bool), np.array(r["scores"])
        is_extra = np.array([extra in p for p in r["photos"]])
        weighted = lambda t: weighted_accuracy(y.tolist(), s.tolist(), float(t))  # noqa: E731
        best_t = max(np.unique(s), key=weighted)
        rows.append({"subject": r["subject"], "cal_pos": cal_s[cal_y].mean(), "cal_neg": cal_s[~cal_y].mean(),
                     "test_pos": s[y].mean(), "test_neg": s[~y & ~is_extra].mean(),
                     "test_extra": s[~y & is_extra].mean() if (~y & is_extra).any() else float("nan"),
                     "weighted_own": weighted(r["threshold"]), "weighted_best": weighted(best_t), "best_threshold": float(best_t),
                     "threshold": float(r["threshold"])})
    return sorted(rows, key=lambda x: x["subject"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--method", default="yollava")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = shift_rows(args.run, args.method)
    if not rows:
        raise SystemExit(f"{args.run} has no finished {args.method} record with calibration scores")
    cols = ("cal_pos", "cal_neg", "test_pos", "test_neg", "test_extra", "threshold", "weighted_own", "best_threshold", "weighted_best")
    lines = [f"# Calibration vs test photos: mean P(yes) of `{args.method}`", "",
             f"`python scripts/domain_shift.py --run {args.run} --method {args.method} --out {args.out}`", "",
             "Calibration: unseen views of the subject's own photos (positives), unused pool photos (negatives). Test: the "
             "run's held-out photos of the subject (positives) and its negatives (the other subjects' photos and held-out "
             "pool photos); `extra`: negatives from a `hard_negatives*` folder (MyVLM: COCO), apart. Weighted accuracy over all the "
             "test photos, at the concept's own threshold and at the best threshold on those test photos (a bound, not "
             "a rule: it is chosen on the answers).", "",
             "| subject | calibration pos | calibration neg | margin | test pos | test neg | margin | test extra neg "
             "| own threshold: weighted | best on test: threshold, weighted |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def mean(c: str) -> float:
        values = [x[c] for x in rows if not np.isnan(x[c])]
        return float(np.mean(values)) if values else float("nan")

    for r in rows + [{"subject": f"**mean of {len(rows)}**", **{c: mean(c) for c in cols}}]:
        lines.append(f"| {r['subject']} | {r['cal_pos']:.3f} | {r['cal_neg']:.3f} | {r['cal_pos'] - r['cal_neg']:+.3f} | "
                     f"{r['test_pos']:.3f} | {r['test_neg']:.3f} | {r['test_pos'] - r['test_neg']:+.3f} | "
                     + ("" if np.isnan(r["test_extra"]) else f"{r['test_extra']:.3f}")
                     + f" | {r['threshold']:.3f}: {r['weighted_own']:.3f} | {r['best_threshold']:.3f}: {r['weighted_best']:.3f} |")
    worse = sum((x["test_pos"] - x["test_neg"]) < (x["cal_pos"] - x["cal_neg"]) for x in rows)
    lines += ["", f"The margin shrinks from calibration to test on {worse} of {len(rows)} subjects."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))


if __name__ == "__main__":
    main()
