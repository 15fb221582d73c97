"""How far training through pocket's bf16 copy is from fp32, on the same batches: loss, answer logits, gradients.

    python benchmarks/bf16_fidelity.py --out benchmarks/results/bf16_fidelity.md

<bo>'s `fast` training samples (a seeded draw of 32, batched as the trainer batches them), a fresh concept; for each
batch the loss, the logits at the answer positions and the gradient of the concept's rows are computed once through
the fp32 model and once through the bf16 copy (`precision="bf16"`), with the prefix cache as in training. The concept
is not updated in between, so both see the same rows. Timing-free: any load is fine.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from train_speed import fresh_concept, retarget  # noqa: E402

from yollava import YoLLaVA  # noqa: E402
from yollava.paths import default_data_root  # noqa: E402
from yollava.personalize import ConceptPipeline, load_pool  # noqa: E402
from yollava.recipes import get_recipe  # noqa: E402
from yollava.train import ConceptTrainer, TrainConfig, split_holdout  # noqa: E402
from yollava.train.trainer import epoch_samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bf16_fidelity.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = default_data_root() / "yollava" / "bo"
    engine = YoLLaVA.from_pretrained("pocket", concepts_dir=Path("/tmp/yollava-fidelity-concepts"))
    recipe = get_recipe("fast")
    ts = ConceptPipeline(engine, recipe, pool=load_pool(progress=False)).training_set("bo", sorted((root / "train").glob("*.jpg")))
    train, _ = split_holdout(ts.samples, recipe.train.holdout_fraction, 0)
    samples = retarget(random.Random(0).sample(epoch_samples(train, recipe.train)[0], args.samples), "speedtest")
    concept, _ = fresh_concept(engine, recipe.train.k)
    encoded = [engine.encode(s.question, image=s.image, answer=s.answer, concepts=["speedtest"]) for s in samples]
    batches = ConceptTrainer(engine, "speedtest", TrainConfig(), progress=False).batches(encoded, 0)
    model, bank = engine.model, engine.bank

    def run(items, precision, cache):
        concept.zero_grad(set_to_none=True)
        decoder, head = engine.adapter.training_modules(precision)
        hidden, ids, answer = model.suffix_hidden_states(bank, items, cache, decoder)
        logits = model.logits(bank, hidden[:, :-1][answer[:, 1:]], head).float()
        loss = F.cross_entropy(logits, ids[:, 1:][answer[:, 1:]])
        loss.backward()
        return loss.item(), logits.detach(), torch.cat([concept.input_rows.grad.flatten(), concept.output_row.grad.flatten()])

    rows, caches = [], {None: {}, "bf16": {}}
    for b in batches:
        items = [encoded[i] for i in b]
        l32, z32, g32 = run(items, None, caches[None])
        l16, z16, g16 = run(items, "bf16", caches["bf16"])
        base = z32[:, : engine.adapter.vocab_size]
        rows.append({"n": len(items), "answer_tokens": z32.shape[0], "loss_fp32": l32, "loss_bf16": l16,
                     "max_logit_diff": float((z16[:, : base.shape[1]] - base).abs().max()),
                     "same_argmax": float((z16[:, : base.shape[1]].argmax(-1) == base.argmax(-1)).float().mean()),
                     "grad_cosine": float(F.cosine_similarity(g16, g32, dim=0)), "grad_norm_ratio": float(g16.norm() / g32.norm())})
    lines = [f"# bf16 training copy vs fp32 on the same batches (`{' '.join(sys.argv[1:]) or 'defaults'}`)", "",
             f"pocket, <bo>'s `fast` samples ({args.samples}, seeded draw), a fresh concept (k={recipe.train.k}), prefix cache as in "
             "training; logits compared over the base vocabulary at every answer position.", "",
             "| batch | samples | answer tokens | loss fp32 | loss bf16 | max abs logit diff | same top token | gradient cosine | gradient norm bf16/fp32 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {i} | {r['n']} | {r['answer_tokens']} | {r['loss_fp32']:.4f} | {r['loss_bf16']:.4f} | {r['max_logit_diff']:.3f} | "
              f"{r['same_argmax']:.3f} | {r['grad_cosine']:.5f} | {r['grad_norm_ratio']:.4f} |" for i, r in enumerate(rows)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
