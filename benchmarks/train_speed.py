"""Training speed: the straightforward recipe vs ours, on the same concept, data and seed, in one run.

    python benchmarks/train_speed.py                          # pocket on the CPU, <bo>, the fast recipe's samples
    python benchmarks/train_speed.py --full                   # also build the data and train the whole recipe, timed
    python benchmarks/train_speed.py --recipe paper           # the paper recipe's samples and epochs
    python benchmarks/train_speed.py --model llava-7b-random  # a LLaVA-1.5-7B-shaped random model (GPU)

Each row adds one ingredient of the fast path to the one above, timed on the same samples:
  naive            whole embedding + output matrices in AdamW, rows restored, batch 1, photo re-encoded
                   every step, logits over the whole sequence (the official code's way)
  +feature cache   each photo through the frozen vision tower once
  +answer logits   the output layer only where an answer token is predicted
  +rows optimizer  AdamW on the concept's rows only (no whole-matrix update and restore)
  +batch 8         real batches (padding)
  +prefix cache    the frozen prompt prefix (system prompt + photo) run once, its keys/values reused
  +bf16 model copy the frozen model's matmuls in bf16 (where the recipe's ``precision="auto"`` picks it: CPUs with
                   AVX-512 BF16 / AMX); concept rows, gradients and AdamW stay fp32
Seconds for the whole recipe = one-off encoding + recipe samples / samples-per-second (steady state).

The physical floor: the fast row's FLOPs (forward + input-gradient backward through the frozen LLM: about
4 x LLM parameters x tokens after the cached prefix, per sample) against a matmul micro-benchmark of this
machine at the same thread count (fp32 [tokens x hidden] @ [hidden x 4 hidden], the LLM's MLP shape).
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

from yollava import YoLLaVA
from yollava.paths import default_data_root
from yollava.personalize import ConceptPipeline, load_pool
from yollava.recipes import get_recipe
from yollava.train import ConceptTrainer, Sample, TrainConfig, TrainerCallback, recognition_metrics, split_holdout
from yollava.train.naive import NaiveTrainer
from yollava.train.trainer import epoch_samples


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
        else:  # the photo through the vision tower again, every step
            batch = [engine.with_bank(bank=engine.bank).encode(s.question, image=s.image, answer=s.answer, concepts=[name])]
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
DEFINITION_FIRST: dict[str, float] = {}


def fresh_concept(engine: YoLLaVA, k: int, name: str = "speedtest"):
    """A new trainable concept ``name`` (replacing one left by an earlier row) and AdamW on its rows only."""
    if name in engine.bank:
        engine.unload_concept(name)
    concept = engine.new_concept(name, k)
    concept.requires_grad_(True)
    return concept, torch.optim.AdamW([concept.input_rows, concept.output_row], lr=1e-3, weight_decay=0.0)


def timed_step(phases: dict[str, float], opt: torch.optim.Optimizer, compute_loss) -> None:
    """One training step, its forward (``compute_loss()``), backward and optimizer seconds added to ``phases``."""
    t = time.perf_counter()
    loss = compute_loss()
    phases["forward"] += time.perf_counter() - t
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    phases["backward"] += time.perf_counter() - t
    t = time.perf_counter()
    opt.step()
    phases["optimizer"] += time.perf_counter() - t


def time_batched(engine: YoLLaVA, samples: list[Sample], batch_size: int, prefix_cache: bool, k: int, precision: str | None = None) -> float:
    name = "speedtest"
    concept, opt = fresh_concept(engine, k, name)
    encoded = [engine.encode(s.question, image=s.image, answer=s.answer, concepts=[name]) for s in samples]
    cache: dict | None = {} if prefix_cache else None
    config = TrainConfig(batch_size=batch_size, prefix_cache=prefix_cache)
    batches = ConceptTrainer(engine, name, config, progress=False).batches(encoded, 0)  # one prefix length per batch
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    t0 = time.perf_counter()
    for b in batches:
        timed_step(phases, opt, lambda: engine.loss([encoded[i] for i in b], cache, precision=precision))
    total = time.perf_counter() - t0
    # where a fast step goes: the frozen LLM's forward and backward over the tokens after the cached prefix
    PROFILE.clear()
    PROFILE.update({name: sec / len(samples) for name, sec in phases.items()})
    PROFILE["tokens_after_prefix"] = sum(len(e.input_ids) - (e.prefix_len if prefix_cache else 0) for e in encoded) / len(samples)
    PROFILE["tokens_total"] = sum(len(e.input_ids) for e in encoded) / len(samples)
    return total / len(samples)


def time_definition_first(engine: YoLLaVA, samples: list[Sample], batch_size: int, k: int, precision: str | None = None) -> float:
    """Step time if the concept definition came before the photo (the paper's system-prompt placement, issue 14's
    first lever), on the same samples: the frozen system prompt run once and cached; the definition
    (``<c> is <c_1>...<c_k>.``) run once per batch *with* gradient, its keys/values shared by every sample of the
    batch; then each sample's photo + question + answer. Only timed here: the product's prompt keeps the definition
    after the photo (moving it changes every concept), so this row's samples are the same tokens re-ordered."""
    from transformers import DynamicCache

    name = "speedtest"
    concept, opt = fresh_concept(engine, k, name)
    model, bank, vocab = engine.model, engine.bank, engine.adapter.vocab_size
    decoder, lm_head = engine.adapter.training_modules(precision)  # the fast row's precision
    image_id = engine.adapter.image_token_id
    shared, per_sample = None, []
    for s in samples:
        e = engine.encode(s.question, image=s.image, answer=s.answer, concepts=[name])
        p = e.prefix_len
        concept_ids = [i for i in range(p, len(e.input_ids)) if e.input_ids[i] >= vocab]
        latent = [i for i in concept_ids if e.input_ids[i] != e.input_ids[p]]  # the k latent tokens (not the identifier)
        end = latent[-1] + 2  # through the full stop after the last latent token
        first_photo_token = next((i for i in range(p) if e.input_ids[i] == image_id), p)
        system, photo = e.input_ids[:first_photo_token], e.input_ids[first_photo_token:p]  # photo: its tokens and what follows them
        head = system + e.input_ids[p:end]
        # the same text in every sample (a text-only sample may split "user\n" into other tokens than one with a photo)
        if shared is not None and model.decode(bank, shared[1]) != model.decode(bank, head):
            raise AssertionError(f"every sample must share the system prompt and definition: {model.decode(bank, head)!r}")
        shared = shared or (len(system), head)
        per_sample.append(type(e)(photo + e.input_ids[end:], [False] * len(photo) + e.answer_mask[end:], e.images))
    n_system, head = shared
    with torch.no_grad():  # the frozen system prompt: once
        _, system_past = decoder(model.embed(bank, torch.tensor([head[:n_system]]), [[]]), use_cache=True)
    system_kv = [(layer.keys, layer.values) for layer in system_past.layers]
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    order = list(range(len(per_sample)))
    t0 = time.perf_counter()
    def batch_loss(items: list) -> torch.Tensor:
        # the definition once, with gradient, after the cached system prompt; its keys/values shared by the batch
        _, past = decoder(model.embed(bank, torch.tensor([head[n_system:]]), [[]]),
                                        past_key_values=DynamicCache(ddp_cache_data=system_kv), use_cache=True)
        shared_kv = [(layer.keys.expand(len(items), -1, -1, -1), layer.values.expand(len(items), -1, -1, -1)) for layer in past.layers]
        ids, mask, answer = model.collate(items)
        full_mask = torch.cat([torch.ones(len(items), len(head), dtype=mask.dtype), mask], dim=1)
        hidden, _ = decoder(model.embed(bank, ids, [e.images for e in items]), attention_mask=full_mask,
                                          past_key_values=DynamicCache(ddp_cache_data=shared_kv), use_cache=True)
        predicts = answer[:, 1:]
        return torch.nn.functional.cross_entropy(model.logits(bank, hidden[:, :-1][predicts], lm_head).float(), ids[:, 1:][predicts])

    for b in range(0, len(order), batch_size):
        items = [per_sample[i] for i in order[b : b + batch_size]]
        timed_step(phases, opt, lambda: batch_loss(items))
    assert concept.input_rows.grad is not None and concept.input_rows.grad.abs().sum() > 0  # the definition did train
    total = time.perf_counter() - t0
    DEFINITION_FIRST.clear()
    DEFINITION_FIRST.update({name: sec / len(samples) for name, sec in phases.items()})
    DEFINITION_FIRST["tokens_per_sample"] = sum(len(e.input_ids) for e in per_sample) / len(samples)
    DEFINITION_FIRST["shared_tokens_per_batch"] = len(head) - n_system
    return total / len(samples)


def matmul_gflops(tokens: int, hidden: int, seconds: float = 3.0, dtype: torch.dtype = torch.float32) -> float:
    """Achieved GFLOP/s of one [tokens x hidden] @ [hidden x 4 hidden] matmul in ``dtype`` at the current thread count."""
    a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, 4 * hidden, dtype=dtype)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * tokens * hidden * 4 * hidden * n / (time.perf_counter() - t0) / 1e9


def llm_parameters(engine: YoLLaVA) -> int:
    """Parameters a token passes through in the language model (embedding and output layers excluded)."""
    adapter = engine.adapter
    skip = {id(adapter.embed_tokens.weight), id(adapter.lm_head.weight)}
    model = adapter.model
    lm = getattr(model, "llm", None) or getattr(model, "language_model", None) or getattr(getattr(model, "model", None), "language_model", None) or model
    return sum(p.numel() for p in lm.parameters() if id(p) not in skip)


def retarget(samples: list[Sample], name: str) -> list[Sample]:
    return [Sample(s.question.replace("<bo>", f"<{name}>"), s.answer.replace("<bo>", f"<{name}>"), s.image, s.kind) for s in samples]


def score_bo(engine: YoLLaVA, root: Path, threshold: float) -> dict:
    """<bo> on its 10 test photos vs the other subjects' photos, at ``threshold``."""
    test = sorted((root / "test").glob("*.jpg"))
    others = [p for p in sorted((root.parent / "one_image_per_concept").glob("*.jpg")) if p.stem != "bo"]
    scores = engine.yes_probabilities("bo", test + others)
    return recognition_metrics([True] * len(test) + [False] * len(others), scores, threshold)


class PhaseClock(TrainerCallback):
    """When training begins (every sample encoded) and ends."""

    def on_train_begin(self, state):
        self.train_begin = time.perf_counter()

    def on_train_end(self, state):
        self.train_end = time.perf_counter()


def time_end_to_end(engine: YoLLaVA, recipe, root: Path, pool) -> dict:
    """``personalize()`` on <bo>'s training photos, as a user runs it, with an empty answer cache (so the
    conversation answers are synthesised), then <bo> scored on its test photos vs the other subjects."""
    import tempfile

    from yollava.personalize import personalize

    synthesis = {"s": 0.0, "answers": 0, "end": None}
    chat_many = engine.chat_many

    def timed_chat_many(prompts, **kwargs):  # the synthesis phase, timed from the outside
        t = time.perf_counter()
        out = chat_many(prompts, **kwargs)
        synthesis["end"] = time.perf_counter()
        synthesis["s"] += synthesis["end"] - t
        synthesis["answers"] += len(out)
        return out

    clock = PhaseClock()
    old_cache = os.environ.get("YOLLAVA_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["YOLLAVA_CACHE"] = tmp  # answers, training-set copy and checkpoints start empty (model and pool are loaded)
        engine.chat_many = timed_chat_many
        try:
            t0 = time.perf_counter()
            result = personalize(engine, "bo", sorted((root / "train").glob("*.jpg")), recipe=recipe, pool=pool, overwrite=True,
                                 checkpoint_dir=Path(tmp) / "checkpoints", callbacks=[clock], progress=True)
            t_end = time.perf_counter()
        finally:
            del engine.chat_many
            if old_cache is None:
                os.environ.pop("YOLLAVA_CACHE", None)
            else:
                os.environ["YOLLAVA_CACHE"] = old_cache
    synth_end = synthesis["end"] or t0
    m = score_bo(engine, root, result.concept.threshold)
    return {"total_s": t_end - t0, "before_answers_s": synth_end - synthesis["s"] - t0, "synthesis_s": synthesis["s"],
            "answers": synthesis["answers"], "encode_s": clock.train_begin - synth_end, "train_s": clock.train_end - clock.train_begin,
            "save_s": t_end - clock.train_end, "samples_seen": result.samples_seen, **m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--samples", type=int, default=16, help="samples timed per row (the same ones for every row)")
    ap.add_argument("--recipe", default="fast", help="whose training samples and epochs: fast (default) | paper")
    ap.add_argument("--epochs", type=int, default=None, help="the recipe's epochs (default: the recipe's)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--full", action="store_true", help="train the whole recipe with the fast path and score <bo>")
    ap.add_argument("--no-conversations", action="store_true")
    ap.add_argument("--only-fast", action="store_true", help="time only the fast row (and its profile)")
    ap.add_argument("--definition-first", action="store_true",
                    help="also time the lever 'concept definition before the photo, shared per batch' on the same samples")
    ap.add_argument("--end-to-end", action="store_true",
                    help="also run personalize() on <bo>'s photos as a user does (fresh answer cache: conversations synthesised), phases timed")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_speed.md"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = (args.data_root or default_data_root()) / "yollava" / "bo"
    engine = YoLLaVA.from_pretrained(args.model, concepts_dir=Path("/tmp/yollava-speed-concepts"))
    device = str(engine.adapter.device)
    chosen = get_recipe(args.recipe)
    if args.no_conversations:
        chosen = chosen.override(conversations=False)
    args.epochs = args.epochs or chosen.train.epochs
    t0 = time.perf_counter()
    pool = load_pool(progress=False)
    pool_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts = ConceptPipeline(engine, chosen, pool=pool).training_set("bo", sorted((root / "train").glob("*.jpg")))
    data_seconds = time.perf_counter() - t0  # conversation answers come from the answer cache when it has them
    train, held = split_holdout(ts.samples, chosen.train.holdout_fraction, 0)
    recipe = epoch_samples(train, chosen.train)[0]  # one epoch's samples as the recipe balances them
    rng = random.Random(0)
    timed = retarget(rng.sample(recipe, min(args.samples, len(recipe))), "speedtest")

    fast_precision = chosen.train.training_precision(engine.adapter)
    time_batched(engine, timed[:2], 1, False, args.k)  # warm-up (allocator, thread pool)
    if fast_precision:
        time_batched(engine, timed[:2], 1, False, args.k, fast_precision)  # makes the copy, outside the timed rows
    fresh = engine.with_bank()  # same model, empty photo cache: time encoding every photo of the recipe once
    t0 = time.perf_counter()
    for s in recipe:
        if s.image is not None:
            fresh.encode_image(s.image)
    encode_seconds = time.perf_counter() - t0

    rows = []
    ladder = [
        ("naive", lambda: time_naive(engine, timed, False, False, True, args.k)),
        ("+feature cache", lambda: time_naive(engine, timed, True, False, True, args.k)),
        ("+answer logits", lambda: time_naive(engine, timed, True, True, True, args.k)),
        ("+rows optimizer", lambda: time_naive(engine, timed, True, True, False, args.k)),
        ("+batch 8", lambda: time_batched(engine, timed, 8, False, args.k)),
        ("+prefix cache" + ("" if fast_precision else " (fast)"), lambda: time_batched(engine, timed, 8, True, args.k)),
    ]
    if fast_precision:  # the recipe trains through a lower-precision copy of the frozen model on this machine
        ladder.append((f"+{fast_precision} model copy (fast)", lambda: time_batched(engine, timed, 8, True, args.k, fast_precision)))
    if args.only_fast:
        ladder = ladder[-1:]
    recipe_samples = len(recipe) * args.epochs
    for label, fn in ladder:
        sec = fn()
        one_off = 0.0 if label.startswith("naive") else encode_seconds
        rows.append({"path": label, "s_per_sample": sec, "samples_per_s": 1 / sec, "recipe_s": one_off + sec * recipe_samples, "peak_rss_mb": peak_rss_mb()})
        print(f"{label:24s} {1 / sec:7.2f} samples/s", flush=True)
    naive_rate = rows[0]["samples_per_s"] if rows[0]["path"] == "naive" else None  # None with --only-fast
    lever = None
    if args.definition_first:
        sec = time_definition_first(engine, timed, 8, args.k, fast_precision)
        lever = {"path": "lever: definition before the photo, shared per batch (timed only)", "s_per_sample": sec, "samples_per_s": 1 / sec,
                 "recipe_s": encode_seconds + sec * recipe_samples, "peak_rss_mb": peak_rss_mb()}
        print(f"{'definition first':24s} {1 / sec:7.2f} samples/s", flush=True)

    hidden = engine.adapter.embed_tokens.weight.shape[1]
    params = llm_parameters(engine)
    fast_tokens = PROFILE["tokens_after_prefix"]
    fast_dtype = {"bf16": torch.bfloat16}.get(fast_precision, torch.float32)
    gflops_machine = matmul_gflops(int(round(fast_tokens * 8)), hidden, dtype=fast_dtype)
    gflops_fp32 = gflops_machine if fast_dtype == torch.float32 else matmul_gflops(int(round(fast_tokens * 8)), hidden)
    fast_s = rows[-1]["s_per_sample"]
    flops_per_sample = 4 * params * fast_tokens
    floor = {"llm_parameters": params, "flops_per_sample": flops_per_sample, "matmul_gflops": gflops_machine,
             "matmul_dtype": str(fast_dtype).removeprefix("torch."), "matmul_gflops_fp32": gflops_fp32,
             "achieved_gflops": flops_per_sample / fast_s / 1e9, "floor_s_per_sample": flops_per_sample / (gflops_machine * 1e9),
             "floor_fp32_s_per_sample": flops_per_sample / (gflops_fp32 * 1e9)}

    full = None
    if args.full:
        t0 = time.perf_counter()
        config = chosen.train if args.epochs == chosen.train.epochs else chosen.override(epochs=args.epochs).train
        result = ConceptTrainer(engine, "bo", config, progress=True).fit(ts.samples)
        wall = time.perf_counter() - t0
        m = score_bo(engine, root, result.concept.threshold)
        full = {"wall_s": wall, "data_s": data_seconds, "pool_s": pool_seconds, "best_epoch": result.best_epoch, "epochs_run": len(result.history), "samples_seen": result.samples_seen, **m}

    end_to_end = time_end_to_end(engine, chosen, root, pool) if args.end_to_end else None

    def _ratio(rate: float, base: float | None) -> str:
        return f"{rate / base:.1f}x" if base else "-"

    lines = [
        f"# Training speed: naive vs fast (`{' '.join(sys.argv[1:]) or 'defaults'}`)",
        "",
        f"model `{args.model}` on {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
        f"concept <bo>, recipe `{chosen.name}` = {len(recipe)} samples/epoch x {args.epochs} epochs = {recipe_samples} samples; "
        f"each row timed on the same {len(timed)} samples; photos encoded once in {encode_seconds:.1f}s; "
        f"load average during the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs slow every row alike).",
        "",
        "| path | samples/s | x naive | s/sample | whole recipe (s, est.) | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows + ([lever] if lever else []):
        lines.append(f"| {r['path']} | {r['samples_per_s']:.2f} | {_ratio(r['samples_per_s'], naive_rate)} | {r['s_per_sample']:.2f} | {r['recipe_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"Profile of the fast row, per sample: forward {PROFILE['forward']:.2f}s, backward {PROFILE['backward']:.2f}s, "
              f"optimizer {PROFILE['optimizer'] * 1000:.1f}ms; {PROFILE['tokens_after_prefix']:.0f} tokens run through the LLM "
              f"(of {PROFILE['tokens_total']:.0f}; the rest is the cached prefix).",
              "", f"Physical floor: about {floor['flops_per_sample'] / 1e9:.1f} GFLOP per sample (4 x {floor['llm_parameters'] / 1e6:.0f} M LLM "
              f"parameters x {fast_tokens:.0f} tokens); the fast row achieves {floor['achieved_gflops']:.1f} GFLOP/s, a {floor['matmul_dtype']} "
              f"matmul of the LLM's MLP shape on this machine {floor['matmul_gflops']:.1f} GFLOP/s ({torch.get_num_threads()} threads): floor "
              f"{floor['floor_s_per_sample']:.2f} s/sample, the fast row is {fast_s / floor['floor_s_per_sample']:.1f}x it"
              + (f"; in fp32 the same matmul runs at {floor['matmul_gflops_fp32']:.1f} GFLOP/s (floor {floor['floor_fp32_s_per_sample']:.2f} s/sample)." if fast_dtype != torch.float32 else "."),
              *([ "", f"Lever, definition before the photo (timed on the same samples, not a product path): "
                  f"{DEFINITION_FIRST['tokens_per_sample']:.0f} tokens per sample + {DEFINITION_FIRST['shared_tokens_per_batch']:.0f} "
                  f"definition tokens once per batch (vs {fast_tokens:.0f} per sample); forward {DEFINITION_FIRST['forward']:.2f}s, "
                  f"backward {DEFINITION_FIRST['backward']:.2f}s per sample; {fast_s / lever['s_per_sample']:.2f}x the fast row."] if lever else []),
              "", f"Data: pool index opened in {pool_seconds:.1f}s; training set built in {data_seconds:.1f}s "
              f"({len(ts.samples)} samples; conversation answers from the answer cache where present)."]
    if full:
        lines += ["", f"Whole recipe, fast path, trained for real: {full['wall_s']:.0f}s wall (+ {data_seconds:.0f}s data, {encode_seconds:.0f}s photos), {full['epochs_run']} epochs, best epoch "
                  f"{full['best_epoch']}; on <bo>'s 10 test photos vs {full['n_negative']} other subjects: weighted accuracy "
                  f"{full['weighted_accuracy']:.3f}, AUC {full['auc']:.3f}."]
    if end_to_end:
        e = end_to_end
        lines += ["", f"End to end, `personalize()` as a user runs it (recipe `{chosen.name}`; photos checked, visual signature, pool "
                  f"negatives, {e['answers']} conversation answers synthesised with an empty answer cache, photos encoded, trained, "
                  f"threshold calibrated, saved): **{e['total_s']:.0f} s** = {e['before_answers_s']:.0f} s photos + signature + negatives, "
                  f"{e['synthesis_s']:.0f} s synthesis, {e['encode_s']:.0f} s encoding samples, {e['train_s']:.0f} s training + calibration, "
                  f"{e['save_s']:.0f} s saving; {e['samples_seen']} samples trained; on <bo>'s 10 test photos vs {e['n_negative']} other "
                  f"subjects: weighted accuracy {e['weighted_accuracy']:.3f}, AUC {e['auc']:.3f} at its own threshold {e['threshold']:.2f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "definition_first": lever and {**lever, **DEFINITION_FIRST}, "full": full, "end_to_end": end_to_end, "profile": PROFILE, "floor": floor, "recipe": chosen.name}, indent=2, default=str))


if __name__ == "__main__":
    main()
