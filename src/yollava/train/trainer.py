"""Learn concepts: AdamW on each concept's k+1 input rows and its output row, nothing else.

Recipe (paper §3; the README's "How it works"): next-token loss on answer tokens, AdamW lr 1e-3, up to N
epochs, score recognition on samples that are never trained on (the recipe's calibration samples, or a
held-back slice of the photos) to keep the best epoch when asked and set the yes/no threshold. Several concepts can train together: their
samples share batches, each sample using its own concept's rows (their parameters are disjoint, so
each concept learns what it would learn alone, up to batch composition). An epoch checkpoint
(safetensors + JSON) lets an interrupted run resume where it stopped. Callers follow or gate a run
through :class:`~yollava.train.callbacks.TrainerCallback` (``ConceptTrainer(callbacks=[...])``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..calibration import calibrate
from ..concepts import Concept
from ..concepts.io import atomic_write, atomic_write_json
from ..data.augment import augmented_view
from ..data.samples import KINDS, Sample
from ..engine import Engine
from ..errors import NotEnoughPhotosError
from ..images import load_image
from ..recipes import TrainConfig
from ..runtime import dtype_name
from .callbacks import CallbackList, TrainerCallback, TrainerState
from .metrics import recognition_metrics

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    concept: Concept
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    holdout: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    samples_seen: int = 0


def split_holdout(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """The samples to score epochs and set the threshold with, apart from the training samples.

    When the training set carries calibration samples (unused pool photos and unseen views of the
    positives), those are held and every photo of the user trains. Otherwise a stratified slice of
    recognition photos is held back (at least one positive and one negative when there are at least
    two of each). Conversations drawn from a held-back photo stay in training: they are text-only, so
    they cannot leak its pixels."""
    if any(s.calibration for s in samples):
        return [s for s in samples if not s.calibration], [s for s in samples if s.calibration]
    rng = random.Random(seed)
    train, held = [], []
    for positive in (True, False):
        group = [s for s in samples if s.is_recognition and s.is_positive == positive]
        rng.shuffle(group)
        n = min(len(group) - 1, max(1, round(len(group) * fraction))) if fraction > 0 and len(group) >= 2 else 0
        held += group[:n]
        train += group[n:]
    train += [s for s in samples if not s.is_recognition]
    return train, held


def positive_weight(samples: list[Sample]) -> int:
    """How many times each positive must count for the positives to weigh about as much as the recognition negatives."""
    pos = sum(s.is_positive for s in samples)
    neg = sum(s.is_recognition and not s.is_positive for s in samples)
    return max(1, round(neg / pos)) if pos and neg > pos else 1


def _positives_repeated(samples: list[Sample], times: int, captions_too: bool = False) -> list[Sample]:
    """The positives (and, with ``captions_too``, the caption samples: one per photo, like a positive) ``times`` each."""
    repeated = (lambda s: s.is_positive or s.kind == "caption") if captions_too else (lambda s: s.is_positive)  # noqa: E731
    return samples if times == 1 else [s for s in samples if not repeated(s)] + [s for s in samples if repeated(s)] * times


def balanced_samples(samples: list[Sample]) -> list[Sample]:
    """The positives repeated so that they weigh about as much as the recognition negatives (the trainer's epoch)."""
    return _positives_repeated(samples, positive_weight(samples))


def epoch_samples(samples: list[Sample], config: TrainConfig) -> tuple[list[Sample], list[float] | None]:
    """One concept's samples of an epoch and their loss weights (``None``: all 1), as ``config`` balances them."""
    if not config.balance_positives:
        return samples, None
    balance = positive_weight(samples)
    if config.balance_by != "weight":
        return _positives_repeated(samples, balance, config.repeat_captions), None
    repeats = min(config.positive_repeats or 1, balance)
    epoch = _positives_repeated(samples, repeats, config.repeat_captions)
    return epoch, [balance / repeats if s.is_positive or (config.repeat_captions and s.kind == "caption") else 1.0 for s in epoch]


@dataclass
class _ConceptRun:
    """What the trainer tracks for one concept."""

    concept: Concept
    held: list[Sample]
    best: dict[str, torch.Tensor]
    best_key: tuple[float, float] = (-1.0, -1.0)
    best_epoch: int = -1
    best_eval: dict[str, Any] = field(default_factory=dict)
    stale: int = 0

    def keep(self, epoch: int) -> None:
        self.best_epoch = epoch
        self.best = {"input_rows": self.concept.input_rows.detach().clone(), "output_row": self.concept.output_row.detach().clone()}


class ConceptTrainer:
    """Train one concept (``name``) or several (``fit_many``) on a frozen engine.

    ``callbacks``: :class:`~yollava.train.callbacks.TrainerCallback` objects told of every epoch and step,
    whose ``step_context`` is held around each pass through the model."""

    def __init__(self, engine: Engine, name: str, config: TrainConfig | None = None, checkpoint_dir: str | Path | None = None,
                 progress: bool = True, callbacks: Sequence[TrainerCallback] = ()):
        self.engine = engine
        self.name = name
        self.config = config or TrainConfig()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.callbacks = CallbackList(callbacks)
        #: the running fit's state (None outside ``fit_many``)
        self.state: TrainerState | None = None
        #: the precision the last fit trained in (``config.precision`` resolved; None: the model's own)
        self.precision: str | None = None
        self._images: dict[tuple[str, int], Any] = {}

    # ---- checkpointing ---------------------------------------------------------------------
    def _ckpt_paths(self) -> tuple[Path, Path]:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / f"{self.name}.ckpt.safetensors", self.checkpoint_dir / f"{self.name}.ckpt.json"

    def _run_id(self, data: dict[str, list[Sample]]) -> str:
        rows = {n: [(s.question, s.answer, str(s.image), s.kind, s.view, s.calibration) for s in samples] for n, samples in data.items()}
        blob = json.dumps([asdict(self.config), rows], default=str, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _save_checkpoint(self, runs: dict[str, _ConceptRun], opt: torch.optim.Optimizer, state: dict) -> None:
        if self.checkpoint_dir is None:
            return
        tensors: dict[str, torch.Tensor] = {}
        for name, run in runs.items():
            c = run.concept
            tensors |= {f"{name}.input_rows": c.input_rows.detach(), f"{name}.output_row": c.output_row.detach()}
            tensors |= {f"{name}.best.{k}": v for k, v in run.best.items()}
            for part, p in (("input_rows", c.input_rows), ("output_row", c.output_row)):
                for key, value in opt.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.dim() > 0:
                        tensors[f"{name}.adam.{part}.{key}"] = value.detach()
        tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
        state["concepts"] = {
            n: {"best_key": list(r.best_key), "best_epoch": r.best_epoch, "best_eval": r.best_eval, "stale": r.stale,
                "steps": {part: _step_of(opt, getattr(r.concept, part)) for part in ("input_rows", "output_row")}}
            for n, r in runs.items()
        }
        st_path, json_path = self._ckpt_paths()
        atomic_write(st_path, lambda p: save_file(tensors, str(p)))
        atomic_write_json(json_path, state)

    def _load_checkpoint(self, run_id: str):
        if self.checkpoint_dir is None:
            return None
        st_path, json_path = self._ckpt_paths()
        if not (st_path.exists() and json_path.exists()):
            return None
        state = json.loads(json_path.read_text())
        if state.get("run_id") != run_id:
            log.warning("ignoring checkpoint %s: it was made for other data or settings", json_path)
            return None
        return state, load_file(str(st_path))

    def _restore(self, runs: dict[str, _ConceptRun], opt: torch.optim.Optimizer, state: dict, tensors: dict) -> None:
        for name, run in runs.items():
            c, saved = run.concept, state["concepts"][name]
            with torch.no_grad():
                c.input_rows.copy_(tensors[f"{name}.input_rows"])
                c.output_row.copy_(tensors[f"{name}.output_row"])
            run.best = {k: tensors[f"{name}.best.{k}"].clone() for k in ("input_rows", "output_row")}
            run.best_key, run.best_epoch = tuple(saved["best_key"]), saved["best_epoch"]
            run.best_eval, run.stale = saved["best_eval"], saved["stale"]
            for part in ("input_rows", "output_row"):
                if f"{name}.adam.{part}.exp_avg" in tensors:
                    opt.state[getattr(c, part)] = {
                        "step": torch.tensor(saved["steps"][part]),
                        "exp_avg": tensors[f"{name}.adam.{part}.exp_avg"].clone(),
                        "exp_avg_sq": tensors[f"{name}.adam.{part}.exp_avg_sq"].clone(),
                    }

    def clear_checkpoint(self) -> None:
        if self.checkpoint_dir is not None:
            for p in self._ckpt_paths():
                p.unlink(missing_ok=True)

    # ---- training --------------------------------------------------------------------------
    def _image(self, sample: Sample):
        """The sample's photo through the frozen vision tower, once per (photo, view)."""
        if sample.image is None:
            return None
        key = (str(sample.image), sample.view)
        if key not in self._images:
            self._images[key] = self.engine.encode_image(self._photo(sample))
        return self._images[key]

    def _photo(self, sample: Sample):
        """The sample's photo itself: its augmented view where it has one, else its file."""
        return augmented_view(load_image(sample.image), sample.view, self.config.seed) if sample.view else sample.image

    def _evaluate(self, name: str, held: list[Sample]) -> dict[str, Any]:
        photo = self._photo if self.engine.bank[name].reading == "views" else self._image
        with self.callbacks.step_context(self.state, "evaluate"):
            scores = self.engine.yes_probabilities(name, [photo(s) for s in held], batch_size=self.config.batch_size)
        labels = [s.is_positive for s in held]
        return {**recognition_metrics(labels, scores, 0.5), "scores": scores, "labels": labels}

    def batches(self, encoded: list, epoch: int) -> list[list[int]]:
        """Shuffled batches for an epoch; with the prefix cache, each batch shares one prefix length."""
        cfg = self.config
        rng = random.Random(cfg.seed * 1000 + epoch)
        order = list(range(len(encoded)))
        rng.shuffle(order)
        if not cfg.prefix_cache:
            return [order[b : b + cfg.batch_size] for b in range(0, len(order), cfg.batch_size)]
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(encoded[i].prefix_len, []).append(i)
        batches = [g[b : b + cfg.batch_size] for g in groups.values() for b in range(0, len(g), cfg.batch_size)]
        rank = {i: r for r, i in enumerate(order)}
        return sorted(batches, key=lambda batch: rank[batch[0]])  # one prefix length: the plain shuffled batches

    def fit(self, samples: list[Sample]) -> TrainResult:
        return self.fit_many({self.name: samples})[self.name]

    def fit_many(self, data: dict[str, list[Sample]]) -> dict[str, TrainResult]:
        cfg, engine = self.config, self.engine
        runs: dict[str, _ConceptRun] = {}
        train: list[tuple[str, Sample]] = []
        weights: list[float] | None = [] if cfg.balance_positives and cfg.balance_by == "weight" else None
        for name, samples in data.items():
            if not any(s.is_positive for s in samples):
                raise NotEnoughPhotosError(f"training data for <{name}> has no positive photo")
            tr, held = split_holdout(samples, cfg.holdout_fraction, cfg.seed)
            epoch, epoch_weights = epoch_samples(tr, cfg)
            train += [(name, s) for s in epoch]
            if weights is not None:
                weights += epoch_weights
            if name in engine.bank:
                engine.unload_concept(name)
            photos = list(dict.fromkeys(s.image for s in tr if s.is_positive and not s.view and not s.calibration))
            concept = engine.new_concept(name, cfg.k, seed=cfg.seed, photos=photos, visual_init=cfg.visual_init,
                                         injection=cfg.injection or "prompt", reading=cfg.reading or "whole")
            concept.requires_grad_(True)
            runs[name] = _ConceptRun(concept, held, {})
            runs[name].keep(-1)
        params = [p for r in runs.values() for p in (r.concept.input_rows, r.concept.output_row)]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        run_id = self._run_id(data)
        history: list[dict[str, Any]] = []
        start_epoch, seen, seconds = 0, 0, 0.0
        resumed = self._load_checkpoint(run_id)
        if resumed is not None:
            state, tensors = resumed
            self._restore(runs, opt, state, tensors)
            history, start_epoch, seen, seconds = state["history"], state["epoch"] + 1, state["samples_seen"], state["seconds"]
            log.info("resuming %s at epoch %d", ", ".join(f"<{n}>" for n in runs), start_epoch)

        state = self.state = TrainerState(list(runs), cfg.epochs, start_epoch=start_epoch, epoch=start_epoch, samples_seen=seen, history=history)
        callbacks = self.callbacks
        # every photo through the frozen vision tower once, every sample tokenised once
        encoded = []
        for name, s in tqdm(train, desc="encoding samples", disable=not self.progress, leave=False):
            with callbacks.step_context(state, "encode"):
                in_photo = [name] if s.is_positive or s.kind == "caption" else []  # what a MyVLM-style concept's head would say
                encoded.append(engine.encode(s.question, image=self._image(s), answer=s.answer, concepts=[name], in_photo=in_photo))
        prefix_cache: dict | None = {} if cfg.prefix_cache and not cfg.gradient_checkpointing else None
        precision = self.precision = cfg.training_precision(engine.adapter)
        steps_per_epoch = state.steps_per_epoch = len(self.batches(encoded, 0))
        state.global_step = start_epoch * steps_per_epoch
        callbacks.on_train_begin(state)
        label = ", ".join(f"<{n}>" for n in runs)
        bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc=f"training {label}", disable=not self.progress, unit="step")
        checkpointing = engine.adapter.gradient_checkpointing() if cfg.gradient_checkpointing else contextlib.nullcontext()
        with checkpointing:
            for epoch in range(start_epoch, cfg.epochs):
                state.epoch, state.step_in_epoch = epoch, 0
                callbacks.on_epoch_begin(state)
                t0 = time.perf_counter()
                losses = []
                for batch_ids in self.batches(encoded, epoch):
                    callbacks.on_step_begin(state)
                    with callbacks.step_context(state, "train"):
                        batch_weights = None if weights is None else [weights[i] for i in batch_ids]
                        loss = engine.loss([encoded[i] for i in batch_ids], prefix_cache, batch_weights, precision)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    losses.append(loss.item())
                    seen += len(batch_ids)
                    state.step_in_epoch += 1
                    state.global_step += 1
                    state.samples_seen, state.loss = seen, losses[-1]
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
                    callbacks.on_step_end(state)
                record: dict[str, Any] = {"epoch": epoch, "loss": sum(losses) / len(losses)}
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
                    record |= self._score_epoch(runs, epoch)
                seconds += time.perf_counter() - t0
                record["seconds"] = round(seconds, 2)
                history.append(record)
                bar.write(_describe(label, record))
                self._save_checkpoint(runs, opt, {"run_id": run_id, "epoch": epoch, "history": history, "samples_seen": seen, "seconds": seconds})
                callbacks.on_epoch_end(state)
                if cfg.patience is not None and all(r.held and r.stale >= cfg.patience for r in runs.values()):
                    bar.write(f"{label}: no better held-back score for {cfg.patience} evaluations, stopping early")
                    break
        bar.close()
        callbacks.on_train_end(state)
        return {name: self._finish(name, run, data[name], history, seen, seconds) for name, run in runs.items()}

    def _score_epoch(self, runs: dict[str, _ConceptRun], epoch: int) -> dict[str, Any]:
        """Score each concept on its held-back photos; remember its best epoch so far."""
        out: dict[str, Any] = {}
        for name, run in runs.items():
            if not run.held:
                run.keep(epoch)  # nothing to choose with: the latest epoch is the best we know
                continue
            ev = self._evaluate(name, run.held)
            metrics = {k: ev[k] for k in ("weighted_accuracy", "auc", "positive_accuracy", "negative_accuracy")}
            out |= metrics if len(runs) == 1 else {f"{name}.{k}": v for k, v in metrics.items()}
            key = (ev["weighted_accuracy"], ev["auc"] if ev["auc"] is not None else 0.0)
            if key > run.best_key or not self.config.select_best_epoch:
                run.best_key, run.best_eval, run.stale = key, ev, 0
                run.keep(epoch)
            else:
                run.stale += 1
        return out

    def _finish(self, name: str, run: _ConceptRun, samples: list[Sample], history, seen: int, seconds: float) -> TrainResult:
        concept, cfg = run.concept, self.config
        with torch.no_grad():
            concept.input_rows.copy_(run.best["input_rows"])
            concept.output_row.copy_(run.best["output_row"])
        concept.requires_grad_(False)
        concept.zero_grad(set_to_none=True)
        holdout = {k: v for k, v in run.best_eval.items() if k not in ("scores", "labels")}
        if run.best_eval.get("scores"):  # kept so a threshold rule can be re-derived later
            holdout |= {"scores": [round(x, 5) for x in run.best_eval["scores"]], "labels": list(run.best_eval["labels"])}
        threshold = calibrate(run.best_eval.get("labels", []), run.best_eval.get("scores", []))
        if run.best_eval.get("scores"):
            holdout["calibrated_threshold"] = threshold
        concept.meta.update(
            recognition_threshold=threshold,
            recipe=asdict(cfg),
            metrics={"best_epoch": run.best_epoch, "holdout": holdout, "history": history, "samples_seen": seen, "seconds": round(seconds, 2),
                     "precision": self.precision or dtype_name(self.engine.adapter.model_dtype)},
            counts={kind: sum(s.kind == kind for s in samples) for kind in KINDS},
        )
        return TrainResult(concept, run.best_epoch, history, holdout, seconds, seen)


def _describe(label: str, r: dict[str, Any]) -> str:
    parts = [f"{label} epoch {r['epoch']}: loss {r['loss']:.4f}"]
    if "weighted_accuracy" in r:
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        parts.append(f"held-back weighted acc {r['weighted_accuracy']:.3f}, AUC {auc}")
    return ", ".join(parts) + f" ({r['seconds']:.0f}s)"


def _step_of(opt: torch.optim.Optimizer, p: torch.nn.Parameter) -> float:
    step = opt.state.get(p, {}).get("step", 0)
    return float(step.item() if torch.is_tensor(step) else step)
