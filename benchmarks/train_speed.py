"""Training speed: the straightforward recipe vs ours, on the same concept, data and seed, in one run.

    python benchmarks/train_speed.py                          # pocket on the CPU, <bo>
    python benchmarks/train_speed.py --full                   # also train the whole default recipe (fast path)
    python benchmarks/train_speed.py --model llava-7b-random  # a LLaVA-1.5-7B-shaped random model (GPU)

Each row adds one ingredient of the fast path to the one above, timed on the same samples:
  naive            whole embedding + output matrices in AdamW, rows restored, batch 1, photo re-encoded
                   every step, logits over the whole sequence (the official code's way)
  +feature cache   each photo through the frozen vision tower once
  +answer logits   the output layer only where an answer token is predicted
  +rows optimizer  AdamW on the concept's rows only (no whole-matrix update and restore)
  +batch 8         real batches (padding)
  +prefix cache    the frozen prompt prefix (system prompt + photo) run once, its keys/values reused
Seconds for the whole recipe = one-off encoding + recipe samples / samples-per-second (steady state).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch

from yollava.engine import YoLLaVA
from yollava.paths import default_data_root
from yollava.personalize import DataConfig, build_data, load_pool
from yollava.train import ConceptTrainer, Sample, TrainConfig, recognition_metrics, split_holdout
from yollava.train.naive import NaiveTrainer
from yollava.train.trainer import _balanced


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_naive(engine: YoLLaVA, samples: list[Sample], cache_features: bool, answer_logits: bool, whole_matrices: bool, k: int) -> float:
    """Batch-1 steps with some fast-path ingredients switched on; returns seconds per sample."""
    name = "speedtest"
    if name in engine.bank:
        engine.unload_concept(name)
    if whole_matrices:
        trainer = NaiveTrainer(engine, name, k=k)
        if not (cache_features or answer_logits):
            return trainer.train(samples)["seconds"] / len(samples)
    concept = engine.bank[name] if name in engine.bank else engine.new_concept(name, k)
    concept.requires_grad_(True)
    opt = None if whole_matrices else torch.optim.AdamW([concept.input_rows, concept.output_row], lr=1e-3, weight_decay=0.0)
    encoded = [engine.encode(s.question, image=s.image, answer=s.answer, concepts=[name]) for s in samples] if cache_features else None
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        if cache_features:
            batch = [encoded[i]]
        else:
            engine._image_cache.clear()
            batch = [engine.encode(s.question, image=s.image, answer=s.answer, concepts=[name])]
        if answer_logits:
            loss = engine.loss(batch)
        else:
            hidden, ids, answer = engine.hidden_states(batch)
            logits = engine.bank.logits(hidden, engine.adapter.lm_head)[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits[answer[:, 1:]].float(), ids[:, 1:][answer[:, 1:]])
        if whole_matrices:  # the naive optimizer over the whole matrices, on these gradients
            trainer.opt.zero_grad(set_to_none=True)
            concept.zero_grad(set_to_none=True)
            loss.backward()
            trainer.w_in.grad = torch.zeros_like(trainer.w_in)
            trainer.w_in.grad[trainer.vocab :] = concept.input_rows.grad
            trainer.w_out.grad = torch.zeros_like(trainer.w_out)
            trainer.w_out.grad[trainer.vocab] = concept.output_row.grad
            trainer.opt.step()
            with torch.no_grad():
                trainer.w_in[: trainer.vocab].copy_(trainer.frozen_in)
                trainer.w_out[: trainer.vocab].copy_(trainer.frozen_out)
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (time.perf_counter() - t0) / len(samples)


PROFILE: dict[str, float] = {}


def time_batched(engine: YoLLaVA, samples: list[Sample], batch_size: int, prefix_cache: bool, k: int) -> float:
    name = "speedtest"
    if name in engine.bank:
        engine.unload_concept(name)
    concept = engine.new_concept(name, k)
    concept.requires_grad_(True)
    opt = torch.optim.AdamW([concept.input_rows, concept.output_row], lr=1e-3, weight_decay=0.0)
    encoded = [engine.encode(s.question, image=s.image, answer=s.answer, concepts=[name]) for s in samples]
    trainer = ConceptTrainer(engine, name, TrainConfig(batch_size=batch_size, prefix_cache=prefix_cache), progress=False)
    cache: dict | None = {} if prefix_cache else None
    batches = trainer._batches(encoded, 0)
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    t0 = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        loss = engine.loss([encoded[i] for i in b], cache)
        phases["forward"] += time.perf_counter() - t
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        phases["backward"] += time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        phases["optimizer"] += time.perf_counter() - t
    total = time.perf_counter() - t0
    # where a fast step goes: the frozen LLM's forward and backward over the tokens after the cached prefix
    PROFILE.clear()
    PROFILE.update({name: sec / len(samples) for name, sec in phases.items()})
    PROFILE["tokens_after_prefix"] = sum(len(e.input_ids) - (e.prefix_len if prefix_cache else 0) for e in encoded) / len(samples)
    PROFILE["tokens_total"] = sum(len(e.input_ids) for e in encoded) / len(samples)
    return total / len(samples)


def retarget(samples: list[Sample], name: str) -> list[Sample]:
    return [Sample(s.question.replace("<bo>", f"<{name}>"), s.answer.replace("<bo>", f"<{name}>"), s.image, s.kind) for s in samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--samples", type=int, default=16, help="samples timed per row (the same ones for every row)")
    ap.add_argument("--epochs", type=int, default=15, help="the recipe's epochs (for the whole-recipe estimate)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--full", action="store_true", help="train the whole recipe with the fast path and score <bo>")
    ap.add_argument("--no-conversations", action="store_true")
    ap.add_argument("--only-fast", action="store_true", help="time only the fast row (and its profile)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_speed.md"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = (args.data_root or default_data_root()) / "yollava" / "bo"
    engine = YoLLaVA.from_pretrained(args.model, concepts_dir=Path("/tmp/yollava-speed-concepts"))
    device = str(engine.adapter.device)
    data = DataConfig(conversations=not args.no_conversations)
    ts = build_data(engine, "bo", sorted((root / "train").glob("*.jpg")), data, load_pool(progress=False))
    train, held = split_holdout(ts.samples, 0.2, 0)
    recipe = _balanced(train)
    rng = random.Random(0)
    timed = retarget(rng.sample(recipe, min(args.samples, len(recipe))), "speedtest")

    time_batched(engine, timed[:2], 1, False, args.k)  # warm-up (allocator, thread pool)
    engine._image_cache.clear()
    t0 = time.perf_counter()
    for s in recipe:
        if s.image is not None:
            engine.encode_image(s.image)
    encode_seconds = time.perf_counter() - t0

    rows = []
    ladder = [
        ("naive", lambda: time_naive(engine, timed, False, False, True, args.k)),
        ("+feature cache", lambda: time_naive(engine, timed, True, False, True, args.k)),
        ("+answer logits", lambda: time_naive(engine, timed, True, True, True, args.k)),
        ("+rows optimizer", lambda: time_naive(engine, timed, True, True, False, args.k)),
        ("+batch 8", lambda: time_batched(engine, timed, 8, False, args.k)),
        ("+prefix cache (fast)", lambda: time_batched(engine, timed, 8, True, args.k)),
    ]
    if args.only_fast:
        ladder = ladder[-1:]
    recipe_samples = len(recipe) * args.epochs
    for label, fn in ladder:
        sec = fn()
        one_off = 0.0 if label.startswith("naive") else encode_seconds
        rows.append({"path": label, "s_per_sample": sec, "samples_per_s": 1 / sec, "recipe_s": one_off + sec * recipe_samples, "peak_rss_mb": peak_rss_mb()})
        print(f"{label:24s} {1 / sec:7.2f} samples/s", flush=True)
    naive_rate = rows[0]["samples_per_s"] if rows[0]["path"] == "naive" else None  # None with --only-fast

    full = None
    if args.full:
        t0 = time.perf_counter()
        result = ConceptTrainer(engine, "bo", TrainConfig(epochs=args.epochs, k=args.k), progress=True).fit(ts.samples)
        wall = time.perf_counter() - t0
        test = sorted((root / "test").glob("*.jpg"))
        others = [p for p in sorted((root.parent / "one_image_per_concept").glob("*.jpg")) if p.stem != "bo"]
        scores = engine.yes_probabilities("bo", test + others)
        m = recognition_metrics([True] * len(test) + [False] * len(others), scores, result.concept.threshold)
        full = {"wall_s": wall, "best_epoch": result.best_epoch, "epochs_run": len(result.history), "samples_seen": result.samples_seen, **m}

    def _ratio(rate: float, base: float | None) -> str:
        return f"{rate / base:.1f}x" if base else "-"

    lines = [
        f"# Training speed: naive vs fast (`{' '.join(sys.argv[1:]) or 'defaults'}`)",
        "",
        f"model `{args.model}` on {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
        f"concept <bo>, recipe = {len(recipe)} samples/epoch x {args.epochs} epochs = {recipe_samples} samples; "
        f"each row timed on the same {len(timed)} samples; photos encoded once in {encode_seconds:.1f}s; "
        f"load average during the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs slow every row alike).",
        "",
        "| path | samples/s | x naive | s/sample | whole recipe (s, est.) | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['path']} | {r['samples_per_s']:.2f} | {_ratio(r['samples_per_s'], naive_rate)} | {r['s_per_sample']:.2f} | {r['recipe_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"Profile of the fast row, per sample: forward {PROFILE['forward']:.2f}s, backward {PROFILE['backward']:.2f}s, "
              f"optimizer {PROFILE['optimizer'] * 1000:.1f}ms; {PROFILE['tokens_after_prefix']:.0f} tokens run through the LLM "
              f"(of {PROFILE['tokens_total']:.0f}; the rest is the cached prefix)."]
    if full:
        lines += ["", f"Whole recipe, fast path, trained for real: {full['wall_s']:.0f}s wall, {full['epochs_run']} epochs, best epoch "
                  f"{full['best_epoch']}; on <bo>'s 10 test photos vs {full['n_negative']} other subjects: weighted accuracy "
                  f"{full['weighted_accuracy']:.3f}, AUC {full['auc']:.3f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "full": full, "profile": PROFILE}, indent=2, default=str))


if __name__ == "__main__":
    main()
