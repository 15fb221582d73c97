"""Training ``pocket``'s projector (stage 0 and 1) and a LoRA on its LLM (stage 2): the loss, the loop, saving.

The loss is the engine's own: each sample is tokenised by :meth:`Engine.encode` with the photo's visual
tokens made by the (trainable) projector from its cached pooled features, and :meth:`Engine.loss` computes
the next-token cross-entropy on the answer tokens only. (The scripts used to re-implement the collate, a
forward pass with the system prompt's keys/values cached, and the loss; the numbers are the same, the engine
runs the system prompt with the rest.)

Everything is written to the output folder the caller names; nothing here writes into the package. The
shipped weights are updated by hand (``scripts/pocket/README.md``, "Updating the shipped weights").
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..engine import Encoded, Engine
from ..models.base import EncodedImage
from ..models.pocket.adapter import load_pocket, save_pocket_weights
from .samples import Sample, stage1_samples, stage2_samples

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class PocketLoss:
    """Answer-only next-token loss of :class:`Sample` batches, computed by the engine.

    ``pooled`` (N, n_visual_tokens, vision_dim): the cached vision features; ``Sample.index`` picks a row."""

    def __init__(self, adapter, pooled: torch.Tensor):
        self.adapter, self.pooled = adapter, pooled
        self.engine = Engine(adapter)

    def encode(self, samples: Sequence[Sample], visual: torch.Tensor) -> list[Encoded]:
        """``visual`` (B, n, hidden): the samples' visual tokens (with their gradient)."""
        ids = self.adapter.image_token_ids
        return [self.engine.encode(s.question, image=EncodedImage(features=v, token_ids=ids), answer=s.answer)
                for s, v in zip(samples, visual)]

    def visual_tokens(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self.adapter.model.projector(self.pooled[[s.index for s in samples]].float())

    def __call__(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self.engine.loss(self.encode(samples, self.visual_tokens(samples)))


def batches(samples: list[Sample], batch_size: int, rng: random.Random) -> list[list[Sample]]:
    """Shuffle, then group samples of similar answer/question length to waste little padding."""
    samples = samples[:]
    rng.shuffle(samples)
    chunks = [samples[i : i + batch_size * 16] for i in range(0, len(samples), batch_size * 16)]
    out = []
    for chunk in chunks:
        chunk.sort(key=lambda s: len(s.question) + len(s.answer))
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


class Log:
    """Print with the seconds since start, and append to ``path``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.t0 = time.time()

    def __call__(self, msg: str):
        line = f"[{time.time() - self.t0:7.0f}s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(loss_fn: Callable[[list[Sample]], torch.Tensor], samples: list[Sample], params, *, lr: float, epochs: float,
          batch_size: int, seed: int, log: Callable[[str], None] = print, on_checkpoint=None, every: int = 50) -> list[float]:
    """AdamW with linear warm-up and cosine decay over ``epochs`` passes of ``samples``; returns the losses."""
    rng = random.Random(seed)
    plan: list[list[Sample]] = []
    while len(plan) < epochs * len(samples) / batch_size:
        plan += batches(samples, batch_size, rng)
    plan = plan[: max(1, round(epochs * len(samples) / batch_size))]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # params: tensors or groups with their own lr
    params = [p for g in opt.param_groups for p in g["params"]]
    warm = min(30, len(plan) // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / len(plan)))))
    log(f"{len(samples)} samples, {len(plan)} steps of {batch_size}, lr {lr}")
    t0, ema, history = time.time(), None, []
    for step, batch in enumerate(plan, 1):
        loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        history.append(loss.item())
        if step % 10 == 0 or step == len(plan):
            el = time.time() - t0
            log(f"step {step}/{len(plan)} loss {loss.item():.3f} (avg {ema:.3f}) {el / (step * batch_size):.2f} s/sample, "
                f"eta {el / step * (len(plan) - step) / 60:.1f} min")
        if on_checkpoint and (step % every == 0 or step == len(plan)):
            on_checkpoint(step, history)
    return history


def word_alignment(adapter, feats, epochs: int, lr: float, seed: int, log) -> dict:
    """Stage 0 (seconds, no LLM pass): make the projector's tokens land near the LLM's own input
    embedding of the photo's class name (mean of its token rows), DeViSE-style: a mean-squared
    error towards that point plus a contrastive term against all other seen class names. The
    LLM then starts out reading a photo of a dog as something close to the word "dog"."""
    import torch.nn.functional as F

    photos, tok = feats["photos"], adapter.tokenizer
    idx = [i for i, p in enumerate(photos) if p.split == "train" and p.name]
    names = sorted({photos[i].name for i in idx})
    emb = adapter.embed_tokens.weight.detach()
    target = torch.stack([emb[tok(" " + n, add_special_tokens=False)["input_ids"]].mean(0) for n in names])
    y = torch.tensor([names.index(photos[i].name) for i in idx])
    x = feats["pooled"][idx].float()
    proj = adapter.model.projector
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    scale = target.norm(dim=-1).pow(2).mean()
    tnorm = F.normalize(target, dim=-1)
    for epoch in range(epochs):
        tot = acc = 0.0
        for b in torch.randperm(len(idx), generator=g).split(64):
            out = proj(x[b])
            mse = (out - target[y[b]][:, None]).pow(2).sum(-1).mean() / scale
            logits = F.normalize(out.mean(1), dim=-1) @ tnorm.T / 0.05
            loss = mse + F.cross_entropy(logits, y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(b)
            acc += (logits.argmax(-1) == y[b]).sum().item()
        if epoch % 5 == 4 or epoch == epochs - 1:
            log(f"stage 0 epoch {epoch + 1}/{epochs}: loss {tot / len(idx):.3f}, train top-1 {acc / len(idx):.2f}")
    return {"epochs": epochs, "lr": lr, "photos": len(idx), "classes": len(names), "final_loss": tot / len(idx)}


# ---- LoRA ------------------------------------------------------------------------------------
def add_lora(llm, rank: int, alpha: int, targets: Sequence[str] = LORA_TARGETS) -> list[torch.nn.Parameter]:
    """Wrap ``llm``'s attention projections in a LoRA (in place, PEFT); returns the LoRA parameters (trainable)."""
    from peft import LoraConfig, get_peft_model

    get_peft_model(llm, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets)))
    lora = [p for n, p in llm.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    return lora


def lora_state(llm) -> dict[str, torch.Tensor]:
    """The LoRA pairs as :func:`~yollava.models.pocket.adapter.save_pocket_weights` stores them
    (``<module path in the LLM>.A`` / ``.B``), for :func:`~yollava.models.pocket.adapter.merge_lora`."""
    from peft.tuners.lora import Linear as LoraLinear

    out = {}
    for name, module in llm.named_modules():
        if isinstance(module, LoraLinear):
            name = name.replace("base_model.model.", "")
            out[f"{name}.A"] = module.lora_A["default"].weight.detach().clone()
            out[f"{name}.B"] = module.lora_B["default"].weight.detach().clone()
    return out


# ---- the stages: load, train, save into ``out`` ---------------------------------------------
def random_pocket(**kwargs):
    """``pocket`` with its random projector (seed 0) and the base LLM, as before any training."""
    with tempfile.TemporaryDirectory() as empty:
        return load_pocket(weights_dir=empty, **kwargs)


def output_folder(out: str | Path) -> Path:
    """``out`` as a Path; never a folder inside the installed package (the shipped weights are updated by hand)."""
    out = Path(out)
    package = Path(__file__).resolve().parents[3]  # src/yollava
    if out.resolve() == package or package in out.resolve().parents:
        raise ValueError(f"{out} is inside the package ({package}): train into a folder of your own, then see "
                         "scripts/pocket/README.md to update the shipped weights")
    return out


def _loss_summary(history: list[float]) -> dict:
    return {"loss_first10": float(np.mean(history[:10])), "loss_last10": float(np.mean(history[-10:]))}


def train_stage1(feats: dict, out: str | Path, *, imagenet: int = 300, caltech: int = 120, colour: int = 60,
                 epochs: float = 1.0, lr: float = 1e-3, batch_size: int = 8, seed: int = 0, word_epochs: int = 0,
                 only_stage0: bool = False, adapter=None) -> Path:
    """Stage 1, alignment: the projector only (LLM and vision frozen), on captions and colour facts; with
    ``word_epochs``, stage 0 (:func:`word_alignment`) first; ``only_stage0``: stop after it. Writes
    ``out/pocket.safetensors`` + ``pocket.json`` (+ ``train.log``, ``loss.json``); returns ``out``."""
    out = output_folder(out)
    seed_all(seed)
    log = Log(out / "train.log")
    samples = stage1_samples(feats, random.Random(seed), imagenet, caltech, colour)
    adapter = adapter or random_pocket()
    params = list(adapter.model.projector.parameters())
    for p in params:
        p.requires_grad_(True)
    t0 = time.time()
    stage0 = word_alignment(adapter, feats, word_epochs, 1e-3, seed, log) if word_epochs else None
    if stage0:
        log(f"stage 0 done in {time.time() - t0:.0f} s")
    if only_stage0:
        save_pocket_weights(out, adapter.model.projector.state_dict(), None,
                            {"stage": 0, "grid": adapter.model.config.grid, "lora": None, "training": {"stage0": stage0}})
        return out

    def save(step, history):
        meta = {"stage": 1, "grid": adapter.model.config.grid, "lora": None,
                "training": {"stage0": stage0, "stage1": {"samples": len(samples), "steps": step, "batch_size": batch_size,
                                                          "lr": lr, "seed": seed, "minutes": round((time.time() - t0) / 60, 1),
                                                          **_loss_summary(history)}}}
        save_pocket_weights(out, adapter.model.projector.state_dict(), None, meta)
        (out / "loss.json").write_text(json.dumps(history))

    train(PocketLoss(adapter, feats["pooled"]), samples, params, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
          log=log, on_checkpoint=save)
    log(f"stage 1 done in {(time.time() - t0) / 60:.1f} min")
    return out


def train_stage2(feats: dict, init: str | Path, out: str | Path, *, samples: int = 1000, epochs: float = 1.0, lr: float = 3e-4,
                 projector_lr: float | None = None, rank: int = 8, alpha: int = 16, batch_size: int = 8, seed: int = 0,
                 adapter=None) -> Path:
    """Stage 2, visual instruction tuning: projector + a rank-``rank`` LoRA on the LLM's attention, starting
    from the weights in ``init`` (stage 1's ``out``). Writes ``out`` as :func:`train_stage1` does."""
    init, out = Path(init), output_folder(out)
    seed_all(seed)
    log = Log(out / "train.log")
    data = stage2_samples(feats, samples, random.Random(seed))
    kinds: dict[str, int] = defaultdict(int)
    for s in data:
        kinds[s.kind] += 1
    log(f"sample mix: {dict(sorted(kinds.items()))}")
    adapter = adapter or load_pocket(weights_dir=init)
    init_meta = json.loads((init / "pocket.json").read_text())
    llm = adapter.model.llm
    lora = add_lora(llm, rank, alpha)
    proj = list(adapter.model.projector.parameters())
    for p in proj:
        p.requires_grad_(True)
    params = [{"params": lora, "lr": lr}, {"params": proj, "lr": projector_lr or lr}]
    log(f"trainable parameters: {sum(p.numel() for p in proj + lora):,}")
    t0 = time.time()

    def save(step, history):
        meta = {"stage": 2, "grid": adapter.model.config.grid, "lora": {"r": rank, "alpha": alpha, "targets": LORA_TARGETS},
                "training": {**init_meta.get("training", {}),
                             "stage2": {"samples": len(data), "mix": dict(kinds), "steps": step, "batch_size": batch_size,
                                        "lr": lr, "projector_lr": projector_lr, "seed": seed,
                                        "minutes": round((time.time() - t0) / 60, 1), **_loss_summary(history)}}}
        save_pocket_weights(out, adapter.model.projector.state_dict(), lora_state(llm), meta)
        (out / "loss.json").write_text(json.dumps(history))

    train(PocketLoss(adapter, feats["pooled"]), data, params, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
          log=log, on_checkpoint=save)
    log(f"stage 2 done in {(time.time() - t0) / 60:.1f} min")
    return out
