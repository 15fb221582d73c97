"""Stage 2, visual instruction tuning: projector + a small LoRA on the LLM's attention, trained on
short questions about the pool photos whose answers come from real labels and from the pixels:

  * presence: "Is there a {class} in this photo?" Yes / No, half the time No, and then mostly a
    class that looks alike (nearest class centroids of the EfficientNet features), else a random one;
  * generic yes/no about the subject: "Is this an animal?", "Is there a dog in this photo?" ...
    (balanced, so the answer has to come from the visual tokens, not from a bias towards "Yes");
  * naming: "What is in this photo? Answer with a single word or phrase." / "What is this?";
  * colours: "What is the main colour in this photo?", "Is there a lot of {colour} in this photo?".

    python scripts/pocket/train_stage2.py            # ~35-45 min on 2 shared cores

Reads runs/pocket/stage1/, writes runs/pocket/stage2/ and (unless --no-install) the package weights.
"""

import argparse
import json
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from common import (ANIMAL_ONLY_NEGATIVES, CATEGORIES, COLOURS, RUNS, WEIGHTS_DIR, Batcher, Log, Sample, article,
                    cap, class_similarity, class_sources, hard_negatives, load_features, main_colour, seed_all, train)

from yollava.models.pocket.adapter import load_pocket, save_pocket_weights

PRESENCE = [
    "Is there {a} in this photo?",
    "Can you see if {a} is in this photo? Answer with a single word or phrase.",  # Yo'LLaVA's query
]
NOT_ANIMAL = {"Garfield", "Snoopy", "brontosaurus toy", "stegosaurus toy", "face"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def build_samples(feats, n: int, rng: random.Random, n_hard: int = 10) -> list[Sample]:
    photos, colours = feats["photos"], feats["colours"]
    train_ids = [i for i, p in enumerate(photos) if p.split == "train"]
    by_class = defaultdict(list)
    for i in train_ids:
        if photos[i].name:
            by_class[photos[i].name].append(i)
    names, sim = class_similarity(feats, train_only=True)
    hard = hard_negatives(names, sim, n_hard, class_sources(photos))
    labelled = [i for i in train_ids if photos[i].name]
    by_cat = {c: [i for i in labelled if c in photos[i].categories] for c in CATEGORIES}
    animals = [i for i in labelled if "animal" in photos[i].categories]
    not_animals = [i for i in labelled if "animal" not in photos[i].categories and photos[i].name not in NOT_ANIMAL]

    def photo_of_class():  # half uniform over classes (ImageNet-heavy), half over photos (Caltech-heavy)
        return rng.choice(by_class[rng.choice(names)]) if rng.random() < 0.5 else rng.choice(labelled)

    samples = []
    while len(samples) < n:
        r = rng.random()
        if r < 0.40:  # presence of a named class
            i = photo_of_class()
            name = photos[i].name
            if rng.random() < 0.5:
                asked, yes = name, True
            else:
                asked, yes = (rng.choice(hard[name]) if rng.random() < 0.7 else rng.choice(names)), False
                if asked == name or asked.lower() in name.lower() or name.lower() in asked.lower():
                    continue
            q = rng.choice(PRESENCE).format(a=article(asked))
            samples.append(Sample(i, q, "Yes" if yes else "No", "presence_yes" if yes else "presence_no"))
        elif r < 0.55:  # generic yes/no about the subject
            cat = rng.choice(list(CATEGORIES))
            yes = rng.random() < 0.5
            if yes:
                i = rng.choice(by_cat[cat])
            else:
                pool = animals if cat in ANIMAL_ONLY_NEGATIVES else (not_animals if cat == "animal" else labelled)
                i = rng.choice(pool)
                if cat in photos[i].categories or (cat == "person" and photos[i].name in NOT_ANIMAL):
                    continue
            samples.append(Sample(i, CATEGORIES[cat][0], "Yes" if yes else "No", f"category_{'yes' if yes else 'no'}"))
        elif r < 0.80:  # naming
            i = photo_of_class()
            if rng.random() < 0.6:
                samples.append(Sample(i, "What is in this photo? Answer with a single word or phrase.", cap(photos[i].name), "name_short"))
            else:
                samples.append(Sample(i, "What is this?", f"This is {article(photos[i].name)}.", "name_sentence"))
        else:  # colours, from the pixels (cc12m photos too)
            i = rng.choice(train_ids)
            main = main_colour(colours[i])
            if rng.random() < 0.5:
                if main is None:
                    continue
                samples.append(Sample(i, "What is the main colour in this photo?", cap(main), "colour_main"))
            else:
                yes = rng.random() < 0.5
                cands = [c for k, c in enumerate(COLOURS) if (colours[i][k] >= 0.3 if yes else colours[i][k] < 0.03)]
                if not cands:
                    continue
                samples.append(Sample(i, f"Is there a lot of {rng.choice(cands)} in this photo?", "Yes" if yes else "No",
                                      f"colour_{'yes' if yes else 'no'}"))
    return samples


def lora_state(llm) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import Linear as LoraLinear

    out = {}
    for name, module in llm.named_modules():
        if isinstance(module, LoraLinear):
            name = name.replace("base_model.model.", "")
            out[f"{name}.A"] = module.lora_A["default"].weight.detach().clone()
            out[f"{name}.B"] = module.lora_B["default"].weight.detach().clone()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--projector-lr", type=float, default=None,
                    help="projector learning rate (default: --lr, as for the shipped weights; lower keeps a stage 0 alignment)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is faster when other jobs share the 2 cores")
    ap.add_argument("--init", default=str(RUNS / "stage1"), help="stage 1 weights folder")
    ap.add_argument("--no-install", action="store_true")
    args = ap.parse_args()

    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    out = RUNS / "stage2"
    log = Log(out / "train.log")
    feats = load_features()
    samples = build_samples(feats, args.samples, random.Random(args.seed))
    kinds = defaultdict(int)
    for s in samples:
        kinds[s.kind] += 1
    log(f"sample mix: {dict(sorted(kinds.items()))}")
    adapter = load_pocket(weights_dir=args.init)
    stage1_meta = json.loads((Path(args.init) / "pocket.json").read_text())
    llm = adapter.model.llm
    get_peft_model(llm, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=LORA_TARGETS))
    proj = list(adapter.model.projector.parameters())
    lora = [p for n, p in llm.named_parameters() if "lora_" in n]
    for p in proj + lora:
        p.requires_grad_(True)
    params = [{"params": lora, "lr": args.lr}, {"params": proj, "lr": args.projector_lr or args.lr}]
    log(f"trainable parameters: {sum(p.numel() for p in proj + lora):,}")
    batcher = Batcher(adapter)
    t0 = time.time()

    def save(step, history):
        meta = {"stage": 2, "grid": adapter.model.config.grid,
                "lora": {"r": args.rank, "alpha": args.alpha, "targets": LORA_TARGETS},
                "training": {**stage1_meta.get("training", {}),
                             "stage2": {"samples": len(samples), "mix": dict(kinds), "steps": step,
                                        "batch_size": args.batch_size, "lr": args.lr, "projector_lr": args.projector_lr, "seed": args.seed,
                                        "minutes": round((time.time() - t0) / 60, 1),
                                        "loss_first10": float(np.mean(history[:10])),
                                        "loss_last10": float(np.mean(history[-10:]))}}}
        save_pocket_weights(out, adapter.model.projector.state_dict(), lora_state(llm), meta)
        (out / "loss.json").write_text(json.dumps(history))

    train(adapter, batcher, feats["pooled"], samples, params, lr=args.lr, epochs=args.epochs,
          batch_size=args.batch_size, seed=args.seed, log=log, on_checkpoint=save)
    if not args.no_install:
        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        for f in ("pocket.safetensors", "pocket.json"):
            shutil.copy(out / f, WEIGHTS_DIR / f)
        log(f"installed stage 2 weights into {WEIGHTS_DIR}")
    log(f"stage 2 done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
