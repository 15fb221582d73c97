"""A training job's live state, and the trainer callback that reports its progress.

:class:`JobProgress` is the one place the server follows training: the trainer tells it of each
epoch and step (:class:`~yollava.train.TrainerCallback`), and it holds the model lock around each
pass the trainer makes (so waiting chat tokens go between two steps) after checking that the job
was not cancelled. Progress is kept in memory and written to the database at most once a second.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..train import TrainerCallback, TrainerState
from .db import Database
from .host import FairLock, JobCancelled


class LiveJob:
    """What the worker knows about a job while it is queued or running (the DB has the rest)."""

    def __init__(self, job_id: str, user_id: int, concept: str):
        self.id, self.user_id, self.concept = job_id, user_id, concept
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.phase = "queued"
        self.progress: dict[str, Any] = {}
        self.recognition_ready = False
        self.last_flush = 0.0

    def snapshot(self) -> tuple[str, dict[str, Any]]:
        with self.lock:
            return self.phase, dict(self.progress)

    def check(self) -> None:
        """Raise :class:`JobCancelled` once the job is cancelled (or the server stops)."""
        if self.cancelled.is_set():
            raise JobCancelled()


def set_phase(db: Database, live: LiveJob, phase: str, progress: dict | None = None) -> None:
    """Publish a job's phase (and, when given, replace its progress) in memory and in the database."""
    if live.recognition_ready and phase in ("preparing", "building training data", "training"):
        phase = f"recognition ready; {phase}"
    with live.lock:
        live.phase = phase
        if progress is not None:
            live.progress = dict(progress)
        snapshot = dict(live.progress)
    db.update_job(live.id, phase=phase, progress=snapshot)


class JobProgress(TrainerCallback):
    """A job's progress from the trainer's events; the model lock and a cancellation check around each pass."""

    def __init__(self, live: LiveJob, db: Database, model_lock: FairLock, flush_every: float = 1.0):
        self.live, self.db, self.model_lock, self.flush_every = live, db, model_lock, flush_every

    @contextlib.contextmanager
    def step_context(self, state: TrainerState, kind: str) -> Iterator[None]:
        self.live.check()
        with self.model_lock:
            yield

    def on_train_begin(self, state: TrainerState) -> None:
        progress: dict[str, Any] = {"epoch": state.start_epoch, "epochs": state.epochs, "step": state.global_step,
                                    "total_steps": state.max_steps}
        if state.history:  # resumed from the epoch checkpoint
            progress["loss"] = state.history[-1].get("loss")
            progress["resumed_from_epoch"] = state.start_epoch
        progress["fraction"] = _fraction(state)
        set_phase(self.db, self.live, "training", progress)

    def on_step_end(self, state: TrainerState) -> None:
        with self.live.lock:
            self.live.progress.update(step=state.global_step, total_steps=state.max_steps, fraction=_fraction(state))
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
