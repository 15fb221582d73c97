"""Hooks into :class:`~yollava.train.ConceptTrainer`, modelled on transformers' ``TrainerCallback``.

A callback subclasses :class:`TrainerCallback` and overrides the events it needs; each gets the
trainer's :class:`TrainerState` (read it, do not change it). Events, in order::

    on_train_begin                      after every sample is encoded (steps per epoch are known)
      on_epoch_begin                    for each epoch run (a resumed run starts at its next epoch)
        on_step_begin / on_step_end     around each optimizer step
      on_epoch_end                      after the epoch is scored and its checkpoint written
    on_train_end                        after the last epoch (or an early stop)

:meth:`TrainerCallback.step_context` wraps every pass the trainer makes through the frozen model —
``"encode"`` (one sample's photo and tokens), ``"train"`` (one step: forward, backward, optimizer
update) and ``"evaluate"`` (scoring the held-back slice) — so a caller that shares the model (the
server) can hold its lock there and let other work in between. A callback may raise in any event or
context to stop training; the last epoch checkpoint stays, so the run resumes from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the kinds of model pass :meth:`TrainerCallback.step_context` wraps
PASS_KINDS = ("encode", "train", "evaluate")


@dataclass
class TrainerState:
    """Where a training run stands; the trainer updates it and hands it to every event."""

    #: the concepts trained together
    concepts: list[str]
    #: epochs the run is configured for (an early stop may end it sooner)
    epochs: int
    #: optimizer steps in one epoch (known from ``on_train_begin``; 0 before)
    steps_per_epoch: int = 0
    #: first epoch this run executes (> 0 when it resumed from a checkpoint)
    start_epoch: int = 0
    #: the epoch running, or (in ``on_epoch_end``) the one just finished; 0-based
    epoch: int = 0
    #: steps done in the current epoch
    step_in_epoch: int = 0
    #: steps done in the whole run, epochs before a resume counted whole
    global_step: int = 0
    samples_seen: int = 0
    #: the last step's loss
    loss: float | None = None
    #: one record per finished epoch: ``loss``, ``seconds`` and, when scored, the held-back metrics
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def epochs_done(self) -> int:
        return len(self.history)


class TrainerCallback:
    """Override the events you need; every default does nothing."""

    def on_train_begin(self, state: TrainerState) -> None:
        pass

    def on_epoch_begin(self, state: TrainerState) -> None:
        pass

    def on_step_begin(self, state: TrainerState) -> None:
        pass

    def on_step_end(self, state: TrainerState) -> None:
        pass

    def on_epoch_end(self, state: TrainerState) -> None:
        pass

    def on_train_end(self, state: TrainerState) -> None:
        pass

    def step_context(self, state: TrainerState, kind: str) -> contextlib.AbstractContextManager:
        """A context held around one pass through the frozen model (``kind`` in :data:`PASS_KINDS`)."""
        return contextlib.nullcontext()


class CallbackList:
    """Several callbacks seen as one: events go to each in order; contexts nest in that order."""

    def __init__(self, callbacks: Sequence[TrainerCallback] = ()):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, TrainerCallback):
                raise TypeError(f"{cb!r} is not a TrainerCallback")

    def _event(self, name: str, state: TrainerState) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(state)

    def on_train_begin(self, state: TrainerState) -> None:
        self._event("on_train_begin", state)

    def on_epoch_begin(self, state: TrainerState) -> None:
        self._event("on_epoch_begin", state)

    def on_step_begin(self, state: TrainerState) -> None:
        self._event("on_step_begin", state)

    def on_step_end(self, state: TrainerState) -> None:
        self._event("on_step_end", state)

    def on_epoch_end(self, state: TrainerState) -> None:
        self._event("on_epoch_end", state)

    def on_train_end(self, state: TrainerState) -> None:
        self._event("on_train_end", state)

    @contextlib.contextmanager
    def step_context(self, state: TrainerState, kind: str) -> Iterator[None]:
        if kind not in PASS_KINDS:
            raise ValueError(f"unknown pass kind {kind!r}")
        with contextlib.ExitStack() as stack:
            for cb in self.callbacks:
                stack.enter_context(cb.step_context(state, kind))
            yield
