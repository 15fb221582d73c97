"""A training job's live state, and the trainer callback that reports its progress.

:class:`JobProgress` is the one place the server follows training: the trainer tells it of each
epoch and step (:class:`~yollava.train.TrainerCallback`), and it holds the model lock around each
pass the trainer makes (so waiting chat tokens go between two steps) after checking that the job
was not cancelled. Progress is kept in memory and written to the database at most once a second.

Every job also reports its **stages** (``progress["stages"]``), in order: photos checked, waiting for
the trainer, concept head fitted, answers synthesised (recipes with conversations), samples prepared,
training, calibration (scoring the held-back photos that set the threshold) and saving. Each has a
status, a count where one exists (answers 3/20, step 12/33) and the seconds it took or has taken so
far; :func:`timeline` turns them into the time spent and an estimate of the time left, so a client
can draw one bar for the whole job that never sits full while work goes on.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..train import TrainerCallback, TrainerState
from .db import Database
from .host import FairLock, JobCancelled

#: every stage a job can go through, in order, with the words a client shows for it
STAGES: dict[str, str] = {
    "photos": "photos checked",
    "queue": "waiting for the trainer",
    "head": "concept head fitted",
    "answers": "answers synthesised",
    "encode": "samples prepared",
    "train": "training",
    "calibrate": "calibration",
    "save": "saving",
}


def plan_stages(conversations: bool, photos_seconds: float = 0.0, now: float | None = None) -> list[dict[str, Any]]:
    """The stages of a new job (answers only when its recipe asks the base model: conversations, captions); the photos
    were checked when they were uploaded."""
    now = time.time() if now is None else now
    stages = []
    for key, label in STAGES.items():
        if key == "answers" and not conversations:
            continue
        stages.append({"key": key, "label": label, "status": "pending", "done": None, "total": None, "started": None, "seconds": None})
    stages[0].update(status="done", started=round(now - photos_seconds, 3), seconds=round(photos_seconds, 3))
    stages[1].update(status="running", started=round(now, 3))
    return stages


class LiveJob:
    """What the worker knows about a job while it is queued or running (the DB has the rest)."""

    def __init__(self, job_id: str, user_id: int, concept: str, stages: list[dict[str, Any]] | None = None):
        self.id, self.user_id, self.concept = job_id, user_id, concept
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.phase = "queued"
        self.progress: dict[str, Any] = {}
        self.stages: list[dict[str, Any]] = stages if stages is not None else plan_stages(False)
        self.recognition_ready = False
        self.last_flush = 0.0

    def snapshot(self) -> tuple[str, dict[str, Any]]:
        """(phase, progress): the progress with the stages (answers counted from ``progress["answers"]``)."""
        with self.lock:
            progress = dict(self.progress)
            stages = copy.deepcopy(self.stages)
        for st in stages:
            if st["key"] == "answers" and st["status"] == "running" and "answers" in progress:
                st["done"] = progress["answers"]
        progress["stages"] = stages
        return self.phase, progress

    def check(self) -> None:
        """Raise :class:`JobCancelled` once the job is cancelled (or the server stops)."""
        if self.cancelled.is_set():
            raise JobCancelled()

    # ---- stages ------------------------------------------------------------------------------
    def _stage(self, key: str) -> dict[str, Any] | None:
        return next((st for st in self.stages if st["key"] == key), None)

    def begin(self, key: str, total: int | None = None, done: int | None = None) -> None:
        """Stage ``key`` starts now (again, if it ran before: a resumed job), with ``total`` units to do."""
        with self.lock:
            st = self._stage(key)
            if st is None:
                return
            st.update(status="running", started=round(time.time(), 3), seconds=None)
            if total is not None:
                st["total"] = int(total)
            if total is not None or done is not None:
                st["done"] = int(done or 0)
                st["base"] = int(done or 0)  # units done before this run started (a resumed job's epochs)

    def begin_once(self, key: str) -> None:
        with self.lock:
            st = self._stage(key)
            running = st is not None and st["status"] == "running"
        if not running:
            self.begin(key, done=0)

    def count(self, key: str, done: int | None = None, total: int | None = None, add: int = 0) -> None:
        with self.lock:
            st = self._stage(key)
            if st is None:
                return
            if total is not None:
                st["total"] = int(total)
            if done is not None:
                st["done"] = int(done)
            elif add:
                st["done"] = (st.get("done") or 0) + add

    def expect(self, key: str, total: int) -> None:
        """How many units a stage that has not started yet will have (so its time can be estimated)."""
        with self.lock:
            st = self._stage(key)
            if st is not None and st["status"] == "pending":
                st["total"] = int(total)

    def finish(self, key: str, status: str = "done") -> None:
        """Stage ``key`` is over (``done``, ``skipped``, ``failed`` or ``cancelled``); one never started took 0 s."""
        now = time.time()
        with self.lock:
            st = self._stage(key)
            if st is None or st["status"] in ("done", "skipped"):
                return
            started = st["started"] if st["started"] is not None else now
            st.update(status=status, started=round(started, 3), seconds=round(now - started, 3))
            if status == "done" and st.get("total") is not None:
                st["done"] = st["total"]

    def stop_running(self, status: str) -> None:
        """A job ended early: its running stage is marked ``status`` (failed / cancelled / interrupted)."""
        for key in [st["key"] for st in self.stages if st["status"] == "running"]:
            self.finish(key, status)

    def stage_status(self, key: str) -> str | None:
        with self.lock:
            st = self._stage(key)
            return None if st is None else st["status"]


def set_phase(db: Database, live: LiveJob, phase: str, progress: dict | None = None) -> None:
    """Publish a job's phase (and, when given, replace its progress) in memory and in the database."""
    if live.recognition_ready and phase in ("preparing", "building training data", "preparing the samples", "training"):
        phase = f"recognition ready; {phase}"
    with live.lock:
        live.phase = phase
        if progress is not None:
            live.progress = dict(progress)
    _, snapshot = live.snapshot()
    db.update_job(live.id, phase=phase, progress=snapshot)


class JobProgress(TrainerCallback):
    """A job's progress from the trainer's events; the model lock and a cancellation check around each pass."""

    def __init__(self, live: LiveJob, db: Database, model_lock: FairLock, flush_every: float = 1.0):
        self.live, self.db, self.model_lock, self.flush_every = live, db, model_lock, flush_every

    @contextlib.contextmanager
    def step_context(self, state: TrainerState, kind: str) -> Iterator[None]:
        self.live.check()
        if kind == "encode":
            self.live.begin_once("encode")
        elif kind == "evaluate":
            self._evaluating(state)
        with self.model_lock:
            yield
        if kind == "encode":
            self.live.count("encode", add=1)
            self._flush()

    def _evaluating(self, state: TrainerState) -> None:
        """Scoring the held-back photos: after the last step it is the calibration (it sets the threshold)."""
        if state.max_steps and state.global_step >= state.max_steps:
            self.live.finish("train")
            self.live.begin("calibrate")
            phase = "calibrating: scoring the held-back photos to set the recognition threshold"
        else:
            phase = f"training: scoring the held-back photos after epoch {state.epoch + 1}"
        with self.live.lock:
            self.live.phase = phase
        self._flush(force=True)

    def on_train_begin(self, state: TrainerState) -> None:
        progress: dict[str, Any] = {"epoch": state.start_epoch, "epochs": state.epochs, "step": state.global_step,
                                    "total_steps": state.max_steps}
        if state.history:  # resumed from the epoch checkpoint
            progress["loss"] = state.history[-1].get("loss")
            progress["resumed_from_epoch"] = state.start_epoch
        progress["fraction"] = _fraction(state)
        self.live.finish("encode")
        self.live.begin("train", total=state.max_steps, done=state.global_step)
        set_phase(self.db, self.live, "training", progress)

    def on_epoch_begin(self, state: TrainerState) -> None:
        with self.live.lock:
            if not self.live.phase.startswith(("training", "recognition ready; training")):
                self.live.phase = "recognition ready; training" if self.live.recognition_ready else "training"

    def on_step_end(self, state: TrainerState) -> None:
        with self.live.lock:
            self.live.progress.update(step=state.global_step, total_steps=state.max_steps, fraction=_fraction(state))
        self.live.count("train", done=state.global_step)
        self._flush()

    def on_epoch_end(self, state: TrainerState) -> None:
        record = state.history[-1] if state.history else {}
        with self.live.lock:
            p = self.live.progress
            p["epoch"] = state.epoch + 1
            if "loss" in record:
                p["loss"] = record["loss"]
            if "weighted_accuracy" in record:
                p["holdout_weighted_accuracy"] = record["weighted_accuracy"]
        self._flush(force=True)

    def on_train_end(self, state: TrainerState) -> None:
        self.live.finish("train")
        self.live.finish("calibrate", "done" if self.live.stage_status("calibrate") == "running" else "skipped")
        self.live.begin("save")
        with self.live.lock:
            self.live.phase = "saving the concept"
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.live.last_flush <= self.flush_every:
            return
        self.live.last_flush = now
        if self.db.get_job(self.live.id) is None:  # its user was removed (the rows cascade): stop at the next pass
            self.live.cancelled.set()
            return
        phase, snapshot = self.live.snapshot()
        self.db.update_job(self.live.id, progress=snapshot, phase=phase)


def _fraction(state: TrainerState) -> float:
    return round(min(1.0, state.global_step / state.max_steps), 4) if state.max_steps else 0.0


# ---- time spent and time left ---------------------------------------------------------------
#: scoring one calibration photo (a forward pass of the model itself) against one training sample (a forward and a
#: backward pass of the bf16 copy where the CPU has one): about the same. Measured on pocket with one thread on a
#: busy machine (load 6-7, session 11): 7.1 s a photo vs 6.1 s a sample. Training itself is not guessed from the
#: stages before it (preparing a sample runs only the vision tower, about 50x cheaper on pocket): it is "not known
#: yet" until its first step is timed, or learnt from an earlier job.
_SCORE_PER_TRAIN_SAMPLE = 1.0


def learn_rates(rates: dict[str, float], stages: list[dict[str, Any]]) -> None:
    """Remember how long each finished stage took per unit (or in all) for the next job's estimate."""
    for st in stages:
        if st["status"] != "done" or st.get("seconds") is None or st["key"] in ("photos", "queue"):
            continue
        units = (st.get("done") or 0) - (st.get("base") or 0) if st.get("total") else None
        if units:
            rates[f"{st['key']}/unit"] = st["seconds"] / units
        if units or st.get("total") is None:  # the whole stage: a guess for the next job until its size is known
            rates[st["key"]] = st["seconds"]


def _rate(stages: dict[str, dict], key: str, now: float) -> float | None:
    """Seconds per unit measured so far in this job's stage ``key``."""
    st = stages.get(key)
    if st is None or st["status"] not in ("running", "done") or not st.get("total"):
        return None
    units = (st.get("done") or 0) - (st.get("base") or 0)
    if units <= 0:
        return None
    spent = st["seconds"] if st["status"] == "done" else now - st["started"]
    return max(spent, 0.0) / units


def _estimate(st: dict, by_key: dict[str, dict], now: float, rates: dict[str, float], batch: int) -> float | None:
    """Seconds the whole stage ``st`` takes (measured in this job where possible, else learnt, else guessed)."""
    key, total = st["key"], st.get("total")
    own = _rate(by_key, key, now)
    if own is not None and total is not None:
        return own * (total - (st.get("base") or 0))
    if total is not None and f"{key}/unit" in rates:
        return rates[f"{key}/unit"] * (total - (st.get("base") or 0))
    if total is None and key in rates:
        return rates[key]
    per_step = _rate(by_key, "train", now) or rates.get("train/unit")
    if key == "calibrate" and per_step is not None and total is not None:
        return per_step / max(1, batch) * _SCORE_PER_TRAIN_SAMPLE * total
    if key in ("save", "head") and key not in rates:
        return 1.0
    return None


def timeline(stages: list[dict[str, Any]], now: float, rates: dict[str, float], batch: int = 8,
             ahead: float | None = None) -> tuple[list[dict[str, Any]], float | None]:
    """Each stage with ``seconds`` (spent) and ``remaining`` (estimated; None: not known yet), and the
    time left for the whole job (None while a stage still to come cannot be estimated). ``ahead``: the
    time left of the jobs queued before this one (the wait in the queue)."""
    out = [dict(st) for st in stages]
    by_key = {st["key"]: st for st in out}
    left: float | None = 0.0
    for st in out:
        if st["status"] in ("done", "skipped", "failed", "cancelled", "interrupted"):
            st["remaining"] = 0.0
            continue
        if st["status"] == "running":
            st["seconds"] = round(max(0.0, now - st["started"]), 3)
            if st["key"] == "queue":
                whole = None if ahead is None else st["seconds"] + ahead
            else:
                whole = _estimate(st, by_key, now, rates, batch)
            st["remaining"] = None if whole is None else round(max(0.0, whole - st["seconds"]), 3)
        else:
            whole = ahead if st["key"] == "queue" else _estimate(st, by_key, now, rates, batch)
            st["remaining"] = None if whole is None else round(whole, 3)
        left = None if left is None or st["remaining"] is None else left + st["remaining"]
    return out, None if left is None else round(left, 1)
