"""One frozen model shared by every request and the training job, with per-request concept scoping.

The base model (the adapter) is loaded once. Each request gets a *view* of the engine with its own,
empty :class:`ConceptBank` into which only the concepts of the requesting user that the request names
are put; the view's concepts folder is that user's folder. So a user can never reach, or be answered
with, another user's concept (another user's ``<bo>`` is simply not in their bank), and no request
changes what another one sees. The only shared mutable thing is the CPU: every forward pass of the
frozen model runs under one FIFO lock, taken per generated token, so concurrent chats interleave
fairly and the training job's steps slot in between.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..concepts import Concept, ConceptBank
from ..concepts.io import concept_stamp, load_concept
from ..engine import Encoded, YoLLaVA
from ..errors import UnknownConceptError, YollavaError
from ..models import Message


class PromptTooLongError(YollavaError, ValueError):
    """A prompt longer than the server allows, or than the model's context can hold with the answer."""


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


def _view(cls, base: YoLLaVA, concepts_dir: Path):
    """A ``cls`` instance sharing ``base``'s model and settings, with its own empty concept bank."""
    view = cls.__new__(cls)
    view.__dict__.update(base.__dict__)
    view.concepts_dir = Path(concepts_dir)
    view.bank = ConceptBank(base.bank.vocab_size, base.bank.hidden_size, base.bank.reserved_tokens)
    view._image_cache = {}
    return view


class RequestEngine(YoLLaVA):
    """The engine as one request sees it: that user's named concepts only, a multi-turn conversation,
    and counts of prompt and generated tokens."""

    _fingerprint: dict[str, Any]
    conversation: list[tuple[str, str, Any]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: refuse prompts longer than this or than the model's context; answers stop at the context's end
    max_prompt_tokens: int | None = None
    context_length: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        return self._fingerprint

    def encode(self, question: str, image=None, answer=None, concepts: Sequence[str] = ()) -> Encoded:
        if self.conversation is None or answer is not None:
            enc = super().encode(question, image=image, answer=answer, concepts=concepts)
        else:
            enc = self._encode_conversation(self.conversation, concepts)
        self.prompt_tokens = n = len(enc.input_ids)
        if self.max_prompt_tokens and n > self.max_prompt_tokens:
            raise PromptTooLongError(f"the prompt is {n:,} tokens (text, photos and each concept's k+1 tokens); "
                                     f"this server allows at most {self.max_prompt_tokens:,}")
        if self.context_length and n >= self.context_length:
            raise PromptTooLongError(f"the prompt is {n:,} tokens; the model's context of {self.context_length:,} tokens "
                                     "leaves no room for an answer")
        return enc

    @property
    def context_full(self) -> bool:
        """True once prompt + answer fill the model's context (the answer ends there, finish_reason "length")."""
        return bool(self.context_length) and self.prompt_tokens + self.completion_tokens >= self.context_length

    def _encode_conversation(self, conversation, concepts: Sequence[str]) -> Encoded:
        """Render ``[(role, text, image or None), ...]``; the concepts named anywhere are introduced
        (``<bo> is <bo_1>...``) at the start of the first user turn, as the engine does for one turn."""
        names = list(dict.fromkeys([*concepts, *self.mentioned_concepts(" ".join(t for _, t, _ in conversation))]))
        self._ensure_loaded(names)
        prefix = " ".join(self.bank[n].system_prefix for n in names)
        messages, images = [], []
        for role, text, image in conversation:
            if prefix and role == "user":
                text, prefix = f"{prefix} {text}", ""
            if image is not None:
                images.append(self.encode_image(image))
            messages.append(Message(role, text, image is not None))
        ids = self._prompt_ids(self.adapter.render(messages), images)
        return Encoded(ids, [False] * len(ids), images)

    def _decode(self, ids: list[int]) -> str:
        self.completion_tokens = max(self.completion_tokens, len(ids))
        return super()._decode(ids)


class JobCancelled(Exception):
    pass


class JobEngine(YoLLaVA):
    """The engine a training job sees: its own bank, exclusive use of the model for every pass (a
    training step keeps the model lock from its forward through the trainer's ``backward()`` and
    optimizer step, and lets waiting chat tokens in before the next step), a cancellation check
    before each, and callbacks that count training steps and synthesised answers."""

    _fingerprint: dict[str, Any]
    _lock: FairLock
    _held: bool = False
    cancelled: threading.Event
    on_step: Callable[[], None] | None = None
    on_answer: Callable[[], None] | None = None

    def fingerprint(self) -> dict[str, Any]:
        return self._fingerprint

    def _check(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    def release(self) -> None:
        """Give back the lock a training step kept (call when the job ends, however it ends)."""
        if self._held:
            self._held = False
            self._lock.release()

    def encode(self, *args, **kwargs):
        self.release()
        self._check()
        with self._lock:
            return super().encode(*args, **kwargs)

    def loss(self, *args, **kwargs):
        self.release()  # the previous step is over: waiting chat tokens go first
        self._check()
        self._lock.acquire()
        self._held = True  # kept through backward() and the optimizer step, until the next call
        try:
            out = super().loss(*args, **kwargs)
        except BaseException:
            self.release()
            raise
        if self.on_step:
            self.on_step()
        return out

    def yes_probabilities(self, *args, **kwargs):
        self.release()
        self._check()
        with self._lock:
            return super().yes_probabilities(*args, **kwargs)

    def stream_chat(self, *args, **kwargs) -> Iterator[str]:
        self.release()
        self._check()
        yield from locked_steps(super().stream_chat(*args, **kwargs), self._lock, self._check)

    def chat(self, *args, **kwargs) -> str:
        out = super().chat(*args, **kwargs)
        if self.on_answer:
            self.on_answer()
        return out


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
            raise UnknownConceptError(f"unknown concept <{name}>")
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] == stamp:
                return hit[1]
        concept = load_concept(folder, name, self.fingerprint).to(device=self.device, dtype=self.dtype)
        for p in concept.parameters():
            p.requires_grad_(False)
        with self._lock:
            self._cache[key] = (stamp, concept)
        return concept

    def forget(self, folder: Path, name: str) -> None:
        with self._lock:
            self._cache.pop((str(Path(folder)), name), None)


class ModelHost:
    def __init__(self, engine: YoLLaVA):
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

    def request_engine(self, concepts_dir: Path, names: Sequence[str], max_prompt_tokens: int | None = None) -> RequestEngine:
        """A view holding exactly ``names`` from ``concepts_dir`` (UnknownConceptError if one is missing);
        its prompts are refused (:class:`PromptTooLongError`) above ``max_prompt_tokens`` or the context."""
        view = _view(RequestEngine, self.engine, concepts_dir)
        view._fingerprint = self.fingerprint
        view.max_prompt_tokens, view.context_length = max_prompt_tokens, self.context_length
        for name in dict.fromkeys(names):
            view.bank.add(self.concepts.get(concepts_dir, name))
        return view

    def job_engine(self, concepts_dir: Path, cancelled: threading.Event) -> JobEngine:
        view = _view(JobEngine, self.engine, concepts_dir)
        view._fingerprint = self.fingerprint
        view._lock = self.lock
        view.cancelled = cancelled
        return view
