"""Who is in this photo, per user: one prototype index per user, over that user's concepts only.

A user's concepts are their ready concepts (``HOME/users/<id>/concepts``) and, for names still training,
the recognition-only concept each job writes as soon as its concept head is fitted
(``HOME/users/<id>/jobs/<job>/instant/NAME.*``). Each user's :class:`~yollava.who.ConceptIndex` is
synced with those files on every request (a ``stat`` per concept; files are re-read only when they
change) and reads them through the host's :class:`~yollava.serve.host.ConceptStore`, so chat and
recognition share one in-memory copy. Another user's concepts are never in the index a request uses.
"""

from __future__ import annotations

import threading
from pathlib import Path
from ..errors import UnknownConceptError
from ..who import (
    DEFAULT_TOP_K,
    ConceptIndex,
    Found,
    WhoResult,
    embed_query,
    embedder_for,
    embedder_id,
    heads_on,
    resolve_mode,
    score_candidates,
    who_in,
)
from .db import ACTIVE

INSTANT_DIR = "instant"


class WhoService:
    def __init__(self, server):
        self.server = server
        self.host = server.host
        self._indexes: dict[int, ConceptIndex] = {}
        self._lock = threading.Lock()

    @property
    def embedder(self):
        return embedder_for(self.host.engine)

    def instant_dir(self, user_id: int, job_id: str) -> Path:
        return self.server.space_for(user_id).job_dir(job_id) / INSTANT_DIR

    def sources(self, user_id: int) -> dict[str, Path]:
        """``NAME -> folder`` of every concept the user can recognise with (ready first, then instant)."""
        space = self.server.space_for(user_id)
        out: dict[str, Path] = {}
        if space.concepts.is_dir():
            for p in sorted(space.concepts.glob("*.json")):
                out[p.stem] = space.concepts
        for job in self.server.db.list_jobs(user_id, ACTIVE):
            d = space.job_dir(job["id"]) / INSTANT_DIR
            if job["concept"] not in out and (d / f"{job['concept']}.json").is_file():
                out[job["concept"]] = d
        return out

    def index(self, user_id: int) -> ConceptIndex:
        eid = embedder_id(self.embedder)
        with self._lock:
            idx = self._indexes.get(user_id)
            if idx is None or idx.embedder_id != eid:
                idx = ConceptIndex(eid, self.host.concepts.get)
                self._indexes[user_id] = idx
        idx.sync(self.sources(user_id))  # unreadable files are left out (GET /v1/concepts lists them)
        return idx

    def forget_user(self, user_id: int) -> None:
        with self._lock:
            self._indexes.pop(user_id, None)

    def who(self, user_id: int, image, *, mode: str = "auto", strategy: str = "retrieve", top_k: int | None = None,
            threshold: float | None = None) -> WhoResult:
        index = self.index(user_id)
        engine = self.host.request_engine(self.server.space_for(user_id).concepts, [], self.server.limits.max_prompt_tokens)
        return who_in(index, engine, self.embedder, image, mode=mode, strategy=strategy, top_k=top_k or DEFAULT_TOP_K,
                      threshold=threshold, llm_lock=self.host.lock)

    def heads_on(self, user_id: int, names: list[str], image) -> list[Found]:
        """The concept heads' answers about ``image`` for those of the user's ``names`` that have one (chat's hint)."""
        engine = self.host.request_engine(self.server.space_for(user_id).concepts, [], self.server.limits.max_prompt_tokens)
        return heads_on(self.index(user_id), engine, self.embedder, names, image)

    def recognize(self, user_id: int, names: list[str], image, *, mode: str = "auto", threshold: float | None = None) -> list[Found]:
        """Each named concept (ready, or recognition-only while it trains), in the order given."""
        index = self.index(user_id)
        entries = []
        for name in names:
            e = index.entries.get(name)
            if e is None:
                folder = self.sources(user_id).get(name)
                if folder is not None:  # its files are there but fail their checks: say why (422)
                    self.host.concepts.get(folder, name)
                raise UnknownConceptError(f"unknown concept <{name}>")
            entries.append(e)
        modes = {resolve_mode(mode, e.stage, e.signature, e.concept.injection) for e in entries}
        x = embed_query(self.embedder, image) if modes & {"head", "fused"} else None
        engine = self.host.request_engine(self.server.space_for(user_id).concepts, [], self.server.limits.max_prompt_tokens)
        found = score_candidates(engine, image, [(e, None) for e in entries], x, mode, threshold, llm_lock=self.host.lock)
        by_name = {f.concept: f for f in found}
        return [by_name[n] for n in names]

