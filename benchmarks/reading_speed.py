"""What reading a concept's yes/no in views costs (``--reading views``, :attr:`yollava.concepts.Concept.reading`).

    python benchmarks/reading_speed.py --concept benchmarks/results/eval_bo_v2_session12/results.run/concepts/yollava/bo.json \
        --threads 2 --out benchmarks/results/reading_speed.md

Times ``Engine.yes_probabilities`` on the same photos read whole and read in views (best of three passes each; the
photos are ``<bo>``'s test photos and other subjects' photos, decoded from disk every time, as ``recognize`` does),
counts the views per photo (:func:`yollava.images.photo_views`), and from the concept's own training set (when it is
beside the concept, as in an evaluation run folder) how many calibration samples training scores: what a ``views``
concept adds to ``personalize``. Report the thread count and the load average printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from embed_speed import per_photo_ms  # (benchmarks/ is on the path when a benchmark runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concept", type=Path, required=True, help="a trained pocket concept's JSON")
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.images import photo_views
    from yollava.paths import default_data_root
    from yollava.prompts import RECOGNITION_QUERY

    data = Path(default_data_root()) / "yollava"
    photos = sorted((data / "bo" / "test").glob("*.jpg"))[: args.photos // 2]
    photos += sorted((data / "one_image_per_concept").glob("*.jpg"))[: args.photos - len(photos)]
    engine = YoLLaVA.from_pretrained("pocket", concepts_dir=args.concept.parent)
    engine.load_concept(args.concept)
    name = args.concept.stem
    query = RECOGNITION_QUERY.format(identifier=engine.bank[name].identifier)
    n_views = [len(photo_views(p)) for p in photos]
    times = {}
    for reading in ("whole", "views"):  # as Engine.yes_probabilities reads a concept of that reading
        def read(images, views=reading == "views"):
            return engine.prompt_yes_probabilities(query, images, [name], views=views)

        read(photos[:2])  # warm-up
        times[reading] = per_photo_ms(lambda: read(photos), len(photos), args.repeats) / 1000
    training_set = args.concept.parent.parent.parent / "training_sets" / "yollava" / f"{name}.json"
    calibration = None
    if training_set.exists():
        samples = json.loads(training_set.read_text())["samples"]
        calibration = sum(1 for s in samples if s.get("calibration"))
    load = os.getloadavg()
    lines = [
        "# Reading a concept's yes/no whole vs in views", "",
        f"`python benchmarks/reading_speed.py --concept {args.concept} --photos {args.photos} --threads {args.threads}`", "",
        f"pocket, {torch.get_num_threads()} threads, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; "
        f"{len(photos)} photos ({len(photos) // 2 if args.photos > 1 else 1} of <bo>, the rest other subjects), "
        f"{sum(n_views) / len(n_views):.1f} views per photo (min {min(n_views)}, max {max(n_views)}); best of {args.repeats} passes.", "",
        "| reading | seconds per photo | x whole |", "|---|---:|---:|",
        f"| whole | {times['whole']:.3f} | 1.0 |",
        f"| views | {times['views']:.3f} | {times['views'] / times['whole']:.1f} |",
    ]
    if calibration is not None:
        extra = calibration * (times["views"] - times["whole"])
        lines += ["", f"Training: the concept's training set has {calibration} calibration samples, scored once after training; "
                      f"read in views they add about {extra:.0f} s to `personalize` at these per-photo costs "
                      "(calibration photos are the same kinds of photo: pool photos and views of the training photos)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
