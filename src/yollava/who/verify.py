"""Verification: each candidate concept answers in its mode (head, yollava, fused), and :func:`who` /
:func:`recognize` put retrieval and verification together."""

from __future__ import annotations

import contextlib

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..concepts import Concept
from ..engine import Recognition
from ..errors import ConceptNotReadyError, UnknownConceptError
from .embedding import _normalise, embed_query, embedder_for, embedder_id
from .index import ConceptIndex, _Entry, index_for, library_sources
from .signature import VisualSignature

log = logging.getLogger(__name__)

MODES = ("auto", "head", "yollava", "fused")
#: the mode ``auto`` uses for a trained concept that has a head: the better one on MyVLM (benchmarks/who.py; on `pocket`
#: the head, with v1 concepts (benchmarks/results/who/results.md) and again with v2's (benchmarks/results/who_v2/results.md:
#: F1 0.64 vs fused 0.54). Concepts without a signature always use ``yollava``.
DEFAULT_TRAINED_MODE = "head"
#: how many candidates the prototype index hands to verification
DEFAULT_TOP_K = 5
_EPS = 1e-6


def _logit(p: float) -> float:
    p = min(max(float(p), _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def margin(p: float, threshold: float) -> float:
    """Calibrated log-odds margin: > 0 exactly when ``p`` is above ``threshold``."""
    return _logit(p) - _logit(threshold)


def fuse(p_head: float, t_head: float, p_llm: float, t_llm: float) -> tuple[float, float]:
    """The fused score: the mean of the head's and the language model's calibrated log-odds margins, through a
    sigmoid; returns (p, threshold 0.5)."""
    return _sigmoid(0.5 * (margin(p_head, t_head) + margin(p_llm, t_llm))), 0.5


def resolve_mode(mode: str, stage: str, signature: VisualSignature | None, injection: str = "prompt") -> str:
    """The mode one concept answers in (see the module docstring). A concept taught MyVLM-style (``injection ==
    "vision"``, recipe ``myvlm``) always answers with its head: its language model never learned to say "No"."""
    if mode not in MODES:
        raise ValueError(f"unknown recognition mode {mode!r}; choose from {', '.join(MODES)}")
    has_head = signature is not None and signature.head is not None
    if stage == "recognition" or (injection == "vision" and has_head):
        if not has_head:
            raise ConceptNotReadyError("this concept has neither trained tokens nor a visual head")
        return "head"
    if not has_head:
        return "yollava"
    if mode == "auto":
        return DEFAULT_TRAINED_MODE
    return mode


@dataclass
class Found(Recognition):
    """One verified concept: ``p_yes`` and ``threshold`` in the answering ``mode``; ``score`` is the calibrated
    log-odds margin (> 0: present), ``similarity`` the prototype cosine (None: not retrieved by prototype)."""

    score: float = 0.0
    similarity: float | None = None
    stage: str = "trained"

    def as_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "identifier": f"<{self.concept}>", "answer": self.answer, "present": self.present,
                "p_yes": round(self.p_yes, 6), "threshold": round(self.threshold, 6), "mode": self.mode,
                "score": round(self.score, 4), "similarity": None if self.similarity is None else round(self.similarity, 4),
                "stage": self.stage}


@dataclass
class WhoResult:
    """``found``: the concepts present, best first; ``checked``: every verified candidate, best first."""

    found: list[Found]
    checked: list[Found]
    strategy: str
    n_concepts: int
    seconds: dict[str, float] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.found)

    def __len__(self) -> int:
        return len(self.found)

    @property
    def names(self) -> list[str]:
        return [f.concept for f in self.found]


def score_candidates(engine, image, candidates: list[tuple[_Entry, float | None]], x: np.ndarray | None, mode: str = "auto",
                     threshold: float | None = None, batch_size: int = 8, llm_lock=None) -> list[Found]:
    """Verify candidates on one photo: heads on the features ``x``, the language model's P(yes) for the
    ones whose mode needs it (one batched pass with the photo's prefix reused)."""
    plan = [(e, sim, resolve_mode(mode, e.stage, e.signature, e.concept.injection)) for e, sim in candidates]
    llm = [e for e, _, m in plan if m in ("yollava", "fused")]
    p_llm: dict[str, float] = {}
    if llm:
        with (llm_lock if llm_lock is not None else _NoLock()):
            encoded = engine.encode_image(image)  # once for every batch
            cache: dict = {}
            for i in range(0, len(llm), batch_size):  # only one batch's concepts in the bank at a time
                chunk = llm[i : i + batch_size]
                with concepts_loaded(engine, [e.concept for e in chunk]):
                    probs = engine.concept_yes_probabilities(encoded, [e.name for e in chunk], batch_size=batch_size, prefix_cache=cache,
                                                             photo=image)
                p_llm.update(zip([e.name for e in chunk], probs))
    out = []
    for e, sim, m in plan:
        sig = e.signature
        if m == "head":
            p, t = sig.photo_probability(x), sig.head.threshold
        elif m == "yollava":
            p, t = p_llm[e.name], e.concept.threshold
        else:
            p, t = fuse(sig.photo_probability(x), sig.head.threshold, p_llm[e.name], e.concept.threshold)
        if threshold is not None:
            t = threshold
        out.append(Found(e.name, "Yes" if p >= t else "No", p, t, m, margin(p, t), sim, e.stage))
    out.sort(key=lambda f: (-f.score, f.concept))
    return out


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@contextlib.contextmanager
def concepts_loaded(engine, concepts: Sequence[Concept]):
    """Put ``concepts`` into ``engine``'s bank for a ``with`` block; the ones it did not hold are taken out after."""
    added = []
    try:
        for c in concepts:
            if c.name in engine.bank:
                if engine.bank[c.name] is c:
                    continue
                raise UnknownConceptError(f"another concept named <{c.name}> is loaded")
            engine.bank.add(c)
            added.append(c.name)
        yield
    finally:
        for name in reversed(added):
            if name in engine.bank:
                engine.unload_concept(name)


def who_in(index: ConceptIndex, engine, embedder, image, *, mode: str = "auto", strategy: str = "retrieve",
           top_k: int = DEFAULT_TOP_K, threshold: float | None = None, batch_size: int = 8, llm_lock=None,
           features: np.ndarray | None = None, multi_crop: bool = True) -> WhoResult:
    """:func:`who` over an already synced index (the server keeps one per user). ``features``: the photo's
    views' features if already computed (:func:`embed_query`)."""
    if strategy not in ("retrieve", "all"):
        raise ValueError("strategy must be 'retrieve' (retrieve-then-verify) or 'all' (verify every concept)")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    with index.lock:
        need_x = any(e.signature is not None for e in index.entries.values())
    x = None
    if need_x:
        x = _normalise(features) if features is not None else embed_query(embedder, image, multi_crop)
    t1 = time.perf_counter()
    seconds["embed"] = t1 - t0
    with index.lock:  # another request may be syncing the same index
        entries = dict(index.entries)
        if strategy == "all":
            sims = {}
            if x is not None:
                sims = {n: e.signature.similarity(x) for n, e in entries.items() if e.signature is not None}
            cands = [(e, sims.get(n)) for n, e in entries.items()]
        else:
            cands = [(entries[n], s) for n, s in index.retrieve(x, top_k) if n in entries]
    t2 = time.perf_counter()
    seconds["retrieve"] = t2 - t1
    checked = score_candidates(engine, image, cands, x, mode, threshold, batch_size, llm_lock) if cands else []
    seconds["verify"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return WhoResult([f for f in checked if f.present], checked, strategy, len(entries), seconds)


def who(engine, image, *, mode: str = "auto", strategy: str = "retrieve", top_k: int = DEFAULT_TOP_K,
        threshold: float | None = None, include_stored: bool = True, batch_size: int = 8, multi_crop: bool = True) -> WhoResult:
    """Every loaded (and, with ``include_stored``, stored) concept present in ``image``, best first.

    ``strategy="retrieve"``: the ``top_k`` concepts whose prototypes are nearest the photo and the ``top_k``
    whose heads score it highest (plus every concept without a signature) are verified; ``"all"``: every
    concept is (the exact reference). ``multi_crop``: look at the photo in several views (:func:`query_views`;
    heads and retrieval use each concept's best view; the language model sees the whole photo)."""
    index = index_for(engine)
    errors = index.sync(library_sources(engine, include_stored))
    for name, err in errors:
        log.warning("skipping concept <%s>: %s", name, err)
    return who_in(index, engine, embedder_for(engine), image, mode=mode, strategy=strategy, top_k=top_k,
                  threshold=threshold, batch_size=batch_size, multi_crop=multi_crop)


def _head_on(sig: VisualSignature | None, embedder_name: str) -> bool:
    """Whether ``sig`` has a concept head fitted on the embedder named ``embedder_name`` (one it can read)."""
    return sig is not None and sig.head is not None and sig.embedder == embedder_name


def heads_in_photo(engine, concepts: Sequence[Concept], image, embedder=None) -> list[str]:
    """MyVLM's toggle, the :attr:`~yollava.engine.Engine.photo_gate` of :class:`yollava.YoLLaVA`: which of
    ``concepts`` their concept heads find in ``image`` (the best of its views against each head's threshold).
    A concept without a head, or with one fitted on another embedder, is never found (logged)."""
    embedder = embedder or embedder_for(engine)
    wanted = embedder_id(embedder)
    usable = []
    for c in concepts:
        sig = VisualSignature.from_concept(c)
        if not _head_on(sig, wanted):
            log.warning("<%s> has no concept head on %s, so it is never taken to be in a photo", c.name, wanted)
            continue
        usable.append((c.name, sig))
    if not usable:
        return []
    x = embed_query(embedder, image)
    return [name for name, sig in usable if sig.photo_probability(x) >= sig.head.threshold]


def heads_on(index: ConceptIndex, engine, embedder, names: Sequence[str], image) -> list[Found]:
    """The concept heads' answers about ``image`` for those of ``names`` in ``index`` that have a head on ``embedder``,
    in the order given. The others are left out: their yes/no would be the language model's own reading, which is what
    a chat hint from the heads (:func:`yollava.who.presence_hint`) stands in for."""
    wanted = embedder_id(embedder)
    entries = [index.entries[n] for n in dict.fromkeys(names) if n in index.entries and _head_on(index.entries[n].signature, wanted)]
    if not entries:
        return []
    by_name = {f.concept: f for f in score_candidates(engine, image, [(e, None) for e in entries], embed_query(embedder, image), "head")}
    return [by_name[e.name] for e in entries]


def head_scores(signature: VisualSignature, embedder, images: Sequence, views: dict | None = None) -> list[float]:
    """The concept head's P(present) for each photo (its best view), as :func:`recognize` reads it in ``head`` mode.
    ``views``: a dict that keeps each photo file's embedded views (by path) for the next call with the same embedder,
    so many heads read a set of photos for the cost of embedding it once."""
    def query(image):
        if views is None or not isinstance(image, (str, Path)):
            return embed_query(embedder, image)
        if str(image) not in views:
            views[str(image)] = embed_query(embedder, image)
        return views[str(image)]

    return [signature.photo_probability(query(image)) for image in images]


def decision_threshold(concept: Concept) -> float:
    """The threshold a user's yes/no about ``concept`` is decided at by default: the concept head's for a MyVLM-style
    concept (``injection == "vision"``: its head recognises in every mode), else the language model's calibrated one."""
    sig = VisualSignature.from_concept(concept) if concept.injection == "vision" else None
    return float(sig.head.threshold) if sig is not None and sig.head is not None else concept.threshold


def recognize(engine, name: str, image, *, mode: str = "auto", threshold: float | None = None) -> Found:
    """Is ``<name>`` in ``image``? Like ``engine.recognize``, in any mode, also for a concept whose head is
    ready but whose tokens are still training (the answer says the mode)."""
    index = index_for(engine)
    src = library_sources(engine)
    if name not in src:
        raise UnknownConceptError(f"unknown concept <{name}>: not loaded, and not in {engine.concepts_dir}")
    errors = [(n, e) for n, e in index.sync(src) if n == name]
    if name not in index.entries:
        raise UnknownConceptError(errors[0][1] if errors else f"unknown concept <{name}>")
    e = index.entries[name]
    m = resolve_mode(mode, e.stage, e.signature, e.concept.injection)
    x = embed_query(embedder_for(engine), image) if m in ("head", "fused") else None
    return score_candidates(engine, image, [(e, None)], x, mode, threshold)[0]
