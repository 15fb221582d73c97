"""The FAISS indexes over concepts' prototypes and heads, kept equal to their sources (loaded concepts and
concept folders), and the library's view: each engine's loaded and stored concepts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..concepts import Concept, load_concept
from ..concepts.io import concept_stamp
from ..errors import YollavaError
from .embedding import _INDEXES, _normalise, embedder_for, embedder_id
from .signature import VisualSignature, concept_stage

log = logging.getLogger(__name__)

#: where the library keeps concepts whose head is ready but whose tokens are still training
PENDING_DIR = ".pending"


class PrototypeIndex:
    """Vectors in a FAISS inner-product index, by concept name: prototypes (L2-normalised: cosine), or
    with ``normalise=False`` concept heads as ``[w, b]`` (searched with ``[x, 1]``: the head's logit).
    ``add`` replaces a name's vector, ``remove`` drops it; ``len(index) == index.ntotal`` always."""

    def __init__(self, dim: int, normalise: bool = True):
        self.dim = dim
        self.normalise = normalise
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, name: str) -> bool:
        return name in self._ids

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def names(self) -> list[str]:
        return list(self._ids)

    def add(self, name: str, prototype: np.ndarray) -> None:
        v = _normalise(prototype) if self.normalise else np.ascontiguousarray(np.atleast_2d(np.asarray(prototype, np.float32)))
        if v.shape[1] != self.dim:
            raise ValueError(f"prototype of <{name}> has {v.shape[1]} values, the index {self.dim}")
        self.remove(name)
        i = self._next
        self._next += 1
        self._index.add_with_ids(v, np.array([i], dtype=np.int64))
        self._ids[name], self._names[i] = i, name

    def remove(self, name: str) -> bool:
        i = self._ids.pop(name, None)
        if i is None:
            return False
        del self._names[i]
        self._index.remove_ids(np.array([i], dtype=np.int64))
        return True

    def search(self, x: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest prototypes to one query vector, best first: ``[(name, cosine)]``."""
        if not self._ids or k <= 0:
            return []
        q = _normalise(x) if self.normalise else np.ascontiguousarray(np.atleast_2d(np.asarray(x, np.float32)))
        scores, ids = self._index.search(q, min(k, len(self._ids)))
        return [(self._names[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if int(i) in self._names]


@dataclass
class _Entry:
    name: str
    concept: Concept
    signature: VisualSignature | None
    stage: str
    stamp: Any


Loader = Callable[[Path, str], Concept]


class ConceptIndex:
    """The concepts one ``who`` considers and their prototypes, kept equal to its sources by :meth:`sync`.

    Sources map a name to a loaded :class:`Concept` or to the folder holding ``NAME.json``; a folder's
    files are re-read only when they change (size, mtime, inode)."""

    def __init__(self, embedder_id: str, loader: Loader):
        self.embedder_id = embedder_id
        self.loader = loader
        self.entries: dict[str, _Entry] = {}
        self.index: PrototypeIndex | None = None  # prototypes (cosine)
        self.heads: PrototypeIndex | None = None  # concept heads as [w, b] (their logit)
        self.lock = threading.Lock()
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def sync(self, sources: dict[str, Concept | Path]) -> list[tuple[str, str]]:
        """Add, replace and drop entries so they match ``sources``; returns ``[(name, error)]`` for files
        that could not be read (they are left out, never fatal)."""
        errors = []
        with self.lock:
            for name in [n for n in self.entries if n not in sources]:
                self._drop(name)
            for name, src in sources.items():
                if isinstance(src, Concept):
                    stamp = ("loaded", id(src))
                    if name in self.entries and self.entries[name].stamp == stamp and self.entries[name].concept is src:
                        continue
                    concept = src
                else:
                    stamp = _stamp(Path(src), name)
                    if stamp is None:
                        self._drop(name)
                        continue
                    if name in self.entries and self.entries[name].stamp == stamp:
                        continue
                    try:
                        concept = self.loader(Path(src), name)
                    except (YollavaError, OSError, ValueError) as e:
                        self._drop(name)
                        errors.append((name, str(e)))
                        continue
                self._put(name, concept, stamp)
        return errors

    def _put(self, name: str, concept: Concept, stamp) -> None:
        sig = VisualSignature.from_concept(concept)
        if sig is not None and sig.embedder != self.embedder_id:
            if name not in self._warned:
                log.warning("<%s>'s visual signature was made with %s, not %s: it is verified without retrieval", name, sig.embedder, self.embedder_id)
                self._warned.add(name)
            sig = None
        if sig is not None:
            if self.index is None:
                self.index, self.heads = PrototypeIndex(sig.dim), PrototypeIndex(sig.dim + 1, normalise=False)
            if sig.dim != self.index.dim:
                sig = None
        self.entries[name] = _Entry(name, concept, sig, concept_stage(concept), stamp)
        if sig is not None:
            self.index.add(name, sig.prototype)
            if sig.head is not None:
                self.heads.add(name, np.append(sig.head.weight, np.float32(sig.head.bias)))
            else:
                self.heads.remove(name)
        elif self.index is not None:
            self.index.remove(name)
            self.heads.remove(name)

    def _drop(self, name: str) -> None:
        self.entries.pop(name, None)
        if self.index is not None:
            self.index.remove(name)
            self.heads.remove(name)

    def without_signature(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.signature is None]

    def retrieve(self, x: np.ndarray | None, k: int) -> list[tuple[str, float | None]]:
        """Candidates: the ``k`` nearest prototypes and the ``k`` concepts whose heads score ``x`` highest (two
        FAISS searches; usually overlapping), then every concept without a signature. ``[(name, cosine)]``."""
        hits: list[tuple[str, float | None]] = []
        if self.index is not None and x is not None:
            views = _normalise(x)
            for index, queries in ((self.index, views), (self.heads, np.hstack([views, np.ones((len(views), 1), np.float32)]))):
                best: dict[str, float] = {}  # each concept's best view
                for q in queries:
                    for n, score in index.search(q, k):
                        best[n] = max(score, best.get(n, -np.inf))
                for n in sorted(best, key=lambda n: (-best[n], n))[:k]:
                    if n not in {h for h, _ in hits}:
                        hits.append((n, self.entries[n].signature.similarity(views)))
        return hits + [(n, None) for n in self.without_signature()]


def library_loader(engine) -> Loader:
    fingerprint = engine.fingerprint()

    def load(folder: Path, name: str) -> Concept:
        c = load_concept(folder, name, fingerprint).to(device=engine.adapter.device, dtype=engine.adapter.dtype)
        for p in c.parameters():
            p.requires_grad_(False)
        return c

    return load


def stored_sources(folder: Path) -> dict[str, Path]:
    """``NAME -> folder`` for every concept in ``folder``, and in its ``.pending`` folder for names not (yet)
    trained there."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    pending = folder / PENDING_DIR
    for d in (folder, pending):
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                out.setdefault(p.stem, d)
    return out


def library_sources(engine, include_stored: bool = True) -> dict[str, Concept | Path]:
    src: dict[str, Concept | Path] = dict(stored_sources(engine.concepts_dir)) if include_stored else {}
    for name in engine.bank.names():  # a loaded concept wins over its file
        src[name] = engine.bank[name]
    return src


def index_for(engine) -> ConceptIndex:
    idx = _INDEXES.get(engine)
    eid = embedder_id(embedder_for(engine))
    if idx is None or idx.embedder_id != eid:
        idx = ConceptIndex(eid, library_loader(engine))
        _INDEXES[engine] = idx
    return idx


def _stamp(folder: Path, name: str) -> tuple | None:
    """The concept files' stamp, with the folder: the same name in another folder is another concept."""
    stamp = concept_stamp(folder, name)
    return None if stamp is None else (str(folder), *stamp)
