"""How much of ``fused`` should be the head? Chosen on the dev subjects, then read on a test run (no model runs).

``fused`` (:func:`yollava.who.verify.fuse`) averages the head's and the learned concept's calibrated log-odds margins
with equal weight. This sweeps the head's weight ``w`` (score: ``w * margin_head + (1 - w) * margin_concept``,
present when > 0) over the dev runs' own ``yollava`` and ``head`` records (one run per seed: the mean and the spread
over seeds), and prints the same sweep on a test run for reference only: the weight is the dev subjects' choice.

    python scripts/fusion_weight_dev.py --out benchmarks/results/recipe_dev_v2/fusion_weight.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from yollava.eval.store import read_records
from yollava.train import recognition_metrics
from yollava.who.verify import margin

DEV_RUNS = [f"benchmarks/results/recipe_dev_v2/fast-visual-global-captions-x-seed{s}.run" for s in range(3)]
TEST_RUN = "benchmarks/results/eval_myvlm_v2_session12/results.run"
WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)


def sweep(run: str, weights=WEIGHTS) -> dict[float, tuple[float, float, int]]:
    """Per weight: mean per-subject weighted accuracy and AUC over the subjects with both records, and their count."""
    records = {(r["method"], r["subject"]): r for r in read_records(Path(run) / "records.jsonl") if "scores" in r}
    subjects = sorted(s for m, s in records if m == "head" and ("yollava", s) in records)
    out = {}
    for w in weights:
        acc, auc = [], []
        for s in subjects:
            head, llm = records[("head", s)], records[("yollava", s)]
            z = np.array([w * margin(a, head["threshold"]) + (1 - w) * margin(b, llm["threshold"])
                          for a, b in zip(head["scores"], llm["scores"])])
            m = recognition_metrics(head["labels"], z.tolist(), threshold=0.0)  # present at margin >= 0, as p >= threshold
            acc.append(m["weighted_accuracy"])
            auc.append(m["auc"])
        out[w] = (float(np.mean(acc)), float(np.mean(auc)), len(subjects))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    dev = [sweep(r) for r in DEV_RUNS]
    test = sweep(TEST_RUN)
    lines = ["# The head's weight in `fused`, chosen on the dev subjects", "",
             f"`python scripts/fusion_weight_dev.py --out {args.out}`", "",
             f"Dev: {len(DEV_RUNS)} seeds of the shipped `fast` (`recipe_dev_v2/fast-visual-global-captions-x-seed*`), "
             f"{dev[0][WEIGHTS[0]][2]} subjects each; test (reference only, not used to choose): MyVLM-29 "
             f"(`{TEST_RUN}`). Means over subjects of the per-subject weighted accuracy (present at margin >= 0) and AUC (the "
             "run reports pool every subject's photos for weighted accuracy, so their numbers differ slightly). w = 0: the concept alone; "
             "w = 1: the head alone; w = 0.5: `fused` as shipped.", "",
             "| head weight w | dev weighted: mean (min-max) | dev AUC: mean (min-max) | MyVLM-29 weighted | MyVLM-29 AUC |",
             "|---:|---:|---:|---:|---:|"]
    for w in WEIGHTS:
        accs, aucs = [d[w][0] for d in dev], [d[w][1] for d in dev]
        lines.append(f"| {w:.2f} | {np.mean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f}) | {np.mean(aucs):.3f} "
                     f"({min(aucs):.3f}-{max(aucs):.3f}) | {test[w][0]:.3f} | {test[w][1]:.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
