"""One frozen model shared by every request and the training job, with per-request concept scoping.

The base model (the adapter) is loaded once. Each request gets its own :class:`Engine` pipeline over
the shared :class:`~yollava.engine.ConceptModel`, with an empty concept bank into which only the
concepts of the requesting user that the request names are put; its concepts folder is that user's
folder. So a user can never reach, or be answered with, another user's concept (another user's
``<bo>`` is simply not in their bank), and no request changes what another one sees. The only shared mutable thing is the CPU: every forward pass of the
frozen model runs under one FIFO lock, taken per generated token, so concurrent chats interleave
fairly and the training job's steps slot in between.
"""

from __future__ import annotations

import collections
import functools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..concepts import Concept
from ..concepts.io import concept_stamp, damaged_message, load_concept
from ..engine import PromptLimit, Engine
from ..errors import CorruptConceptError, PromptTooLongError, UnknownConceptError
from ..who import heads_in_photo

__all__ = ["ChatSession", "ConceptStore", "FairLock", "JobCancelled", "ModelHost", "PromptTooLongError", "context_length",
           "locked_steps"]


def context_length(adapter) -> int | None:
    """The model's context window in tokens (``max_position_embeddings``), if its config says."""
    model = getattr(adapter, "model", None)
    for owner in (model, getattr(model, "llm", None), getattr(model, "language_model", None)):
        config = getattr(owner, "config", None)
        for cfg in (getattr(config, "text_config", None), config):
            n = getattr(cfg, "max_position_embeddings", None)
            if isinstance(n, int) and n > 0:
                return n
    return None


class FairLock:
    """A re-entrant mutex handed to waiters in arrival order (``threading.RLock`` makes no such promise)."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._waiters: collections.deque[tuple[threading.Event, int]] = collections.deque()
        self._owner: int | None = None
        self._count = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._count += 1
                return
            if self._owner is None:
                self._owner, self._count = me, 1
                return
            ev = threading.Event()
            self._waiters.append((ev, me))
        ev.wait()  # release() hands the lock over to us, already owned

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("FairLock released by a thread that does not hold it")
            self._count -= 1
            if self._count:
                return
            if self._waiters:
                ev, who = self._waiters.popleft()
                self._owner, self._count = who, 1
                ev.set()
            else:
                self._owner = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class ChatSession:
    """One chat request: that user's view of the engine, the conversation, and the token counts the
    response reports. :meth:`stream` encodes the conversation on its first step (the model lock is then
    held by the caller) and refuses it (:class:`PromptTooLongError`) above the engine's prompt limit."""

    def __init__(self, engine: Engine, conversation: list[tuple[str, str, Any]], concepts: Sequence[str] = (),
                 found: list[dict] | None = None):
        self.engine = engine
        self.conversation = conversation
        self.concepts = list(concepts)
        #: who was found in the photo when the request named no concept (a yollava extension of the response)
        self.found = found or []
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def context_length(self) -> int | None:
        limit = self.engine.prompt_limit
        return limit.context_length if limit is not None else None

    @property
    def context_full(self) -> bool:
        """True once prompt + answer fill the model's context (the answer ends there, finish_reason "length")."""
        n = self.context_length
        return bool(n) and self.prompt_tokens + self.completion_tokens >= n

    def _counted(self, n: int) -> None:
        self.completion_tokens = max(self.completion_tokens, n)

    def stream(self, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        enc = self.engine.encode_conversation(self.conversation, self.concepts)
        self.prompt_tokens = len(enc.input_ids)
        yield from self.engine.stream_encoded(enc, max_new_tokens, temperature, top_p, seed, on_token=self._counted)


class JobCancelled(Exception):
    pass


def locked_steps(gen: Iterator[str], lock: FairLock, check: Callable[[], None] | None = None) -> Iterator[str]:
    """Run a generator one step at a time under ``lock`` (so other work interleaves between tokens)."""
    try:
        while True:
            if check:
                check()
            with lock:
                try:
                    piece = next(gen)
                except StopIteration:
                    return
            yield piece
    finally:
        gen.close()


class ConceptStore:
    """Concepts read from users' folders, kept in memory while their files are unchanged."""

    def __init__(self, fingerprint: dict[str, Any], device, dtype):
        self.fingerprint = fingerprint
        self.device, self.dtype = device, dtype
        self._cache: dict[tuple[str, str], tuple[tuple, Concept]] = {}
        self._lock = threading.Lock()

    def exists(self, folder: Path, name: str) -> bool:
        return (Path(folder) / f"{name}.json").is_file()

    def get(self, folder: Path, name: str) -> Concept:
        folder = Path(folder)
        key = (str(folder), name)
        stamp = concept_stamp(folder, name)
        if stamp is None:
            self._cache.pop(key, None)
            if (folder / f"{name}.json").is_file():  # its metadata without its rows: damaged, not unknown
                raise CorruptConceptError(damaged_message(name))
            raise UnknownConceptError(f"unknown concept <{name}>")
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] == stamp:
                return hit[1]
        concept = load_concept(folder, name, self.fingerprint).to(device=self.device, dtype=self.dtype)
        for p in concept.parameters():
            p.requires_grad_(False)
            if not bool(torch.isfinite(p).all()):  # checked again in the dtype the model computes in
                raise CorruptConceptError(f"concept <{name}>: its rows are not finite as {str(p.dtype).replace('torch.', '')}, the model's dtype")
        with self._lock:
            self._cache[key] = (stamp, concept)
        return concept

    def forget(self, folder: Path, name: str) -> None:
        with self._lock:
            self._cache.pop((str(Path(folder)), name), None)


class ModelHost:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = FairLock()
        self.fingerprint = engine.fingerprint()
        self.fingerprint_json = json.dumps(self.fingerprint, sort_keys=True)
        self.concepts = ConceptStore(self.fingerprint, engine.adapter.device, engine.adapter.dtype)
        self.context_length = context_length(engine.adapter)

    @property
    def reserved_tokens(self) -> set[str]:
        return self.engine.bank.reserved_tokens

    @property
    def image_marker(self) -> str:
        return self.engine.adapter.image_marker

    def mentioned_concepts(self, text: str) -> list[str]:
        return self.engine.mentioned_concepts(text)

    def request_engine(self, concepts_dir: Path, names: Sequence[str], max_prompt_tokens: int | None = None) -> Engine:
        """The engine as one request sees it: the shared model with a bank of exactly ``names`` from
        ``concepts_dir`` (UnknownConceptError if one is missing); its prompts are refused
        (:class:`PromptTooLongError`) above ``max_prompt_tokens`` or the model's context."""
        view = Engine(self.engine.model, concepts_dir, fingerprint=self.fingerprint,
                       prompt_limit=PromptLimit(max_prompt_tokens, self.context_length))
        view.photo_gate = functools.partial(heads_in_photo, view)  # a concept trained with recipe myvlm: its head is the toggle
        for name in dict.fromkeys(names):
            view.bank.add(self.concepts.get(concepts_dir, name))
        return view

    def job_engine(self, concepts_dir: Path) -> Engine:
        """The engine a training job trains in: the shared model with its own, empty bank; the job's
        :class:`~yollava.serve.jobs.JobProgress` callback takes the model lock around each step."""
        return Engine(self.engine.model, concepts_dir, fingerprint=self.fingerprint)
