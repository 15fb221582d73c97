"""pocket v2: visual tokens that keep what makes a photo this one, and an LLM taught to look at them.

Stage A (no LLM pass, minutes): the projector from scratch, on the pool's photos and views. Three terms:
  * word alignment (v1's stage 0, on the global token only): the global token near the LLM's own embedding of the
    photo's class name, so the frozen LLM starts out reading a photo of a dog as something close to the word "dog"
    (v1 pulled every token there, and with them every photo of a class to one point);
  * reconstruction: a linear read-out of each token must give back the feature grid it came from,
    so the projector cannot throw away what the vision tower saw (v1's stage 0 mapped every photo of a class to one
    point: a linear probe fell from AUC 0.921 on the pooled features to 0.783 on v1's tokens, MyVLM);
  * instance contrast: two views of one photo closer to each other than to any other photo in the batch, the
    other photo of the same class included.
Stage B (the LLM, bf16 copy, resumable): the projector and a LoRA on every Linear of the LLM on
:func:`~.samples.v2_samples` (presence, generic yes/no, naming, colours, instance matching, where on a collage,
descriptions in the LLM's own words). The LoRA is merged into the fp32 LLM when the weights load.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import Engine
from ..models.base import EncodedImage, Message
from ..models.pocket.adapter import save_pocket_weights
from .loop import Log, batches, output_folder, random_pocket, seed_all
from .lora import ALL_LINEAR, add_lora, load_lora_tensors, lora_tensors
from .samples import Sample, v2_samples

GRID = 4


# ---- the loss of v2 samples (one, two or no photos) ----------------------------------------
class PocketLossV2:
    """Answer-only loss of :class:`Sample` batches through the engine; ``table`` (N, n_tokens, 1280) holds the pool's
    and the views' pooled features, ``Sample.rows`` index it; ``precision`` as :meth:`Engine.loss`."""

    def __init__(self, adapter, table: torch.Tensor, precision: str | None = "bf16"):
        self.adapter, self.table, self.precision = adapter, table, precision
        self.engine = Engine(adapter)

    def encode(self, samples: list[Sample], visual: list[torch.Tensor]):
        ids, marker = self.adapter.image_token_ids, self.adapter.image_marker
        out = []
        for s, vis in zip(samples, visual):
            images = [EncodedImage(features=v, token_ids=ids) for v in vis]
            rendered = self.adapter.render([Message("user", "".join(f"{marker}\n" for _ in images) + s.question)])
            out.append(self.engine.model.encoded(self.engine.bank, rendered, images, s.answer))
        return out

    def visual_tokens(self, samples: list[Sample]) -> list[torch.Tensor]:
        rows = [r for s in samples for r in s.rows]
        tokens = self.adapter.model.projector(self.table[rows].float()) if rows else None
        out, k = [], 0
        for s in samples:
            out.append(tokens[k : k + len(s.rows)] if s.rows else tokens[:0] if tokens is not None else torch.zeros(0))
            k += len(s.rows)
        return out

    def __call__(self, samples: list[Sample]) -> torch.Tensor:
        return self.engine.loss(self.encode(samples, self.visual_tokens(samples)), precision=self.precision)


# ---- stage A ---------------------------------------------------------------------------------
def class_word_targets(adapter, names: list[str]) -> torch.Tensor:
    tok, emb = adapter.tokenizer, adapter.embed_tokens.weight.detach()
    return torch.stack([emb[tok(" " + n, add_special_tokens=False)["input_ids"]].mean(0) for n in names])


def align_projector(adapter, feats: dict, views: dict, *, epochs: int = 12, lr: float = 1e-3, seed: int = 0,
                    w_word: float = 0.05, w_recon: float = 1.0, w_instance: float = 0.2, log=print) -> dict:
    """Stage A (see the module docstring); trains ``adapter.model.projector`` in place and returns a summary."""
    photos, offset = feats["photos"], len(feats["photos"])
    table = torch.cat([feats["pooled"], views["pooled"]]).float()
    train_named = [i for i, p in enumerate(photos) if p.split == "train" and p.name]
    names = sorted({photos[i].name for i in train_named})
    targets, tnorm = class_word_targets(adapter, names), None
    tnorm = F.normalize(targets, dim=-1)
    label = {i: names.index(photos[i].name) for i in train_named}
    pairs = [k for k, v in enumerate(views["plan"]) if v["kind"] == "pair" and v["split"] == "train"]
    mean = table.mean(0, keepdim=True)
    rms = (table - mean).pow(2).mean().sqrt()  # recon below = share of the variance not recovered (1 = nothing)
    proj = adapter.model.projector
    for p in proj.parameters():
        p.requires_grad_(True)
    readout = nn.Linear(proj[-1].out_features, table.shape[-1])
    opt = torch.optim.AdamW([*proj.parameters(), *readout.parameters()], lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    scale = targets.norm(dim=-1).pow(2).mean()
    steps = epochs * math.ceil(len(train_named) / 64)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    row = lambda k, role: offset + views["row_of"][k, role]  # noqa: E731
    t0, step = time.time(), 0
    for epoch in range(epochs):
        totals = Counter()
        order = torch.randperm(len(train_named), generator=g).tolist()
        pair_order = torch.randperm(len(pairs), generator=g).tolist()
        for b, start in enumerate(range(0, len(order), 64)):
            idx = [train_named[j] for j in order[start : start + 64]]
            y = torch.tensor([label[i] for i in idx])
            out = proj(table[idx])
            word = (out[:, -1] - targets[y]).pow(2).sum(-1).mean() / scale  # the global token only: local ones keep detail
            word = word + F.cross_entropy(F.normalize(out.mean(1), dim=-1) @ tnorm.T / 0.05, y)
            ks = [pairs[pair_order[(b * 32 + j) % len(pairs)]] for j in range(32)]
            v0, v1, other = ([row(k, r) for k in ks] for r in ("view0", "view1", "other"))
            pv = proj(table[v0 + v1 + other])
            a, p, o = F.normalize(pv.flatten(1), dim=-1).split(len(ks))
            logits = a @ torch.cat([p, o]).T / 0.1  # each view0's positive is its view1; every other row is a negative
            instance = F.cross_entropy(logits, torch.arange(len(ks)))
            rec_rows = idx + v0 + v1 + other
            rec_out = torch.cat([out, pv])
            # layer-normed in, unit-scale out: the read-out needs no weights of the tokens' tiny scale (word embeddings)
            recon = (readout(F.layer_norm(rec_out, rec_out.shape[-1:])) - (table[rec_rows] - mean) / rms).pow(2).mean()
            loss = w_word * word + w_recon * recon + w_instance * instance
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            totals.update({"word": word.item(), "recon": recon.item(), "instance": instance.item(), "n": 1})
        n = totals.pop("n")
        log(f"stage A epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v / n:.3f}" for k, v in totals.items()) +
            f" ({time.time() - t0:.0f} s)")
    return {"epochs": epochs, "lr": lr, "photos": len(train_named), "pairs": len(pairs), "classes": len(names),
            "weights": {"word": w_word, "recon": w_recon, "instance": w_instance}, "seconds": round(time.time() - t0)}


@torch.no_grad()
def token_probes(projector, feats: dict, views: dict, split: str = "heldout_seen") -> dict:
    """Cheap held-out checks of what the tokens keep (no LLM): instance AUC = cosine of two views of one photo vs a
    view of another photo of the same kind (flattened tokens), for the raw pooled grid and the projector's tokens."""
    from sklearn.metrics import roc_auc_score

    offset = len(feats["photos"])
    ks = [k for k, v in enumerate(views["plan"]) if v["kind"] == "pair" and v["split"] == split]
    table = torch.cat([feats["pooled"], views["pooled"]]).float()
    out = {}
    for label, fn in (("pooled", lambda x: x), ("tokens", lambda x: projector(x))):
        z = {r: F.normalize(fn(table[[offset + views["row_of"][k, r] for k in ks]]).flatten(1), dim=-1)
             for r in ("view0", "view1", "other")}
        same, diff = (z["view0"] * z["view1"]).sum(-1), (z["view0"] * z["other"]).sum(-1)
        out[f"instance_auc_{label}"] = float(roc_auc_score([1] * len(ks) + [0] * len(ks), torch.cat([same, diff]).numpy()))
    return out


# ---- stage B ---------------------------------------------------------------------------------
def _save(out: Path, adapter, wrapped, meta: dict) -> None:
    save_pocket_weights(out, adapter.model.projector.state_dict(), lora_tensors(wrapped), meta)


def train_llm_stage(adapter, feats: dict, views: dict, descriptions: dict, out: Path, *, samples: int, lr: float,
                    projector_lr: float, rank: int, alpha: float, batch_size: int, seed: int, meta: dict, log,
                    every: int = 20) -> dict:
    """Stage B, resumable: ``out/state.pt`` (optimizer and step, tensors only) and the weights are written every
    ``every`` steps; a rerun with the same arguments continues from there."""
    rng = random.Random(seed)
    data = v2_samples(feats, views, descriptions, samples, rng)
    kinds = dict(sorted(Counter(s.kind for s in data).items()))
    log(f"stage B: {len(data)} samples {kinds}")
    decoder, _ = adapter.bf16_copy()
    wrapped = add_lora(decoder, rank, alpha, ALL_LINEAR)
    lora_params = [p for m in wrapped.values() for p in (m.A, m.B)]
    proj = list(adapter.model.projector.parameters())
    for p in proj + lora_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": lora_params, "lr": lr}, {"params": proj, "lr": projector_lr}], weight_decay=0.0)
    plan = batches(data, batch_size, random.Random(seed + 1))
    warm = min(30, len(plan) // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / len(plan)))))
    start, history, spent = 0, [], 0.0
    state_path = out / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        from safetensors.torch import load_file

        tensors = load_file(out / "pocket.safetensors")
        adapter.model.projector.load_state_dict({k.removeprefix("projector."): v.float() for k, v in tensors.items()
                                                 if k.startswith("projector.")})
        load_lora_tensors(wrapped, {k.removeprefix("lora."): v.float() for k, v in tensors.items() if k.startswith("lora.")})
        opt.load_state_dict(state["optimizer"])
        start, history, spent = int(state["step"]), state["history"].tolist(), float(state["seconds"])
        for _ in range(start):
            sched.step()
        log(f"stage B: resumed at step {start}/{len(plan)}")
    loss_fn = PocketLossV2(adapter, torch.cat([feats["pooled"], views["pooled"]]), precision="bf16")
    t0 = time.time() - spent

    def checkpoint(step):
        stage_b = {"samples": len(data), "mix": kinds, "steps": step, "of_steps": len(plan), "batch_size": batch_size, "lr": lr,
                   "projector_lr": projector_lr, "rank": rank, "alpha": alpha, "targets": list(ALL_LINEAR), "seed": seed,
                   "minutes": round((time.time() - t0) / 60, 1),
                   "loss_first20": float(np.mean(history[:20])) if history else None,
                   "loss_last20": float(np.mean(history[-20:])) if history else None}
        full = {**meta, "lora": {"r": rank, "alpha": alpha, "targets": list(ALL_LINEAR)},
                "training": {**meta["training"], "stageB": stage_b}}
        _save(out, adapter, wrapped, full)
        torch.save({"optimizer": opt.state_dict(), "step": step, "history": torch.tensor(history),
                    "seconds": time.time() - t0}, out / "state.tmp")
        (out / "state.tmp").replace(state_path)
        (out / "loss.json").write_text(json.dumps(history))

    ema = None
    for step in range(start + 1, len(plan) + 1):
        batch = plan[step - 1]
        loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(proj + lora_params, 1.0)
        opt.step()
        sched.step()
        history.append(loss.item())
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 10 == 0 or step == len(plan):
            el = time.time() - t0
            done = step - start
            log(f"step {step}/{len(plan)} loss {loss.item():.3f} (avg {ema:.3f}), "
                f"{(el - spent) / (done * batch_size):.2f} s/sample, eta {(el - spent) / done * (len(plan) - step) / 60:.1f} min")
        if step % every == 0 or step == len(plan):
            checkpoint(step)
    return {"steps": len(plan), "mix": kinds}


def train_v2(feats: dict, views: dict, out: str | Path, *, work: Path, grid: int = GRID, stage_a_epochs: int = 6,
             samples: int = 6000, lr: float = 2e-4, projector_lr: float = 1e-4, rank: int = 8, alpha: float = 16,
             batch_size: int = 8, seed: int = 0, adapter=None) -> Path:
    """Both stages into ``out`` (``stageA/`` for the projector alone, then ``out`` itself); resumable."""
    from .describe import load_or_make_descriptions

    out = output_folder(out)
    seed_all(seed)
    log = Log(out / "train.log")
    adapter = adapter or random_pocket()
    adapter.model.config.grid = grid
    stage_a_dir = out / "stageA"
    if (stage_a_dir / "pocket.json").is_file():
        from safetensors.torch import load_file

        t = load_file(stage_a_dir / "pocket.safetensors")
        adapter.model.projector.load_state_dict({k.removeprefix("projector."): v.float() for k, v in t.items()})
        stage_a = json.loads((stage_a_dir / "pocket.json").read_text())["training"]["stageA"]
        log("stage A: loaded from " + str(stage_a_dir))
    else:
        stage_a = align_projector(adapter, feats, views, epochs=stage_a_epochs, seed=seed, log=log)
        stage_a.update(token_probes(adapter.model.projector, feats, views))
        log(f"stage A held-out probes: {stage_a}")
        save_pocket_weights(stage_a_dir, adapter.model.projector.state_dict(), None,
                            {"stage": "v2-A", "grid": grid, "lora": None, "training": {"stageA": stage_a}})
    descriptions = load_or_make_descriptions(lambda: Engine(adapter), feats, work, log=log)
    log(f"{len(descriptions)} class descriptions")
    meta = {"stage": "v2", "version": 2, "grid": grid, "training": {"stageA": stage_a, "descriptions": len(descriptions)}}
    train_llm_stage(adapter, feats, views, descriptions, out, samples=samples, lr=lr, projector_lr=projector_lr, rank=rank,
                    alpha=alpha, batch_size=batch_size, seed=seed, meta=meta, log=log)
    log("pocket v2 done")
    return out
