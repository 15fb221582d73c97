"""``fused``: who-is-here's ``fused`` mode as a recognition method, read from the run's own records.

:func:`yollava.who.verify.fuse` joins the concept head's and the learned concept's calibrated log-odds margins (each
against its own threshold) into one score with threshold 0.5. Both inputs are already in the run folder once
``yollava`` and ``head`` have scored a subject (the same test photos, in the same order), so this method computes no
feature and runs no model: list it after them (``--methods yollava,head,fused``). A subject either of them has not
finished is recorded as unavailable, and a later resumed run fills it in.
"""

from __future__ import annotations

from pathlib import Path

from ..who.verify import fuse
from .datasets import Subject
from .methods import EvalContext, Method, Prompting, Unavailable
from .registry import register_method
from .store import read_records

#: the two methods whose records are fused, in the order ``fuse`` takes them
SOURCES = ("head", "yollava")


@register_method("fused", tasks=("recognition",))
class FusedMethod(Method):
    name = "fused"

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._sources: dict[str, dict[str, dict]] = {}

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        found = {r["method"]: r for r in read_records(ctx.run_dir / "records.jsonl")
                 if r.get("subject") == subject.name and r.get("method") in SOURCES and "scores" in r}
        missing = [m for m in SOURCES if m not in found]
        if missing:
            raise Unavailable(f"fused reads this run's {' and '.join(missing)} record(s) for the subject: run "
                              f"--methods {','.join(SOURCES)},fused")
        self._sources[subject.name] = found
        return {m: {"threshold": found[m]["threshold"]} for m in SOURCES}

    def threshold(self, ctx: EvalContext, subject: Subject) -> float:
        return 0.5

    def recognition_scores(self, ctx: EvalContext, subject: Subject, images: list[Path]) -> list[float]:
        head, llm = (self._sources[subject.name][m] for m in SOURCES)
        wanted = [str(p) for p in images]
        for m, r in (("head", head), ("yollava", llm)):
            if len(r["photos"]) != len(wanted) or any(w != p and not w.endswith("/" + p) for w, p in zip(wanted, r["photos"])):
                raise Unavailable(f"this run's {m} record scored other photos than this test set")
        return [fuse(ph, head["threshold"], pl, llm["threshold"])[0] for ph, pl in zip(head["scores"], llm["scores"])]

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        raise Unavailable("fused only recognises")

    def release(self, ctx: EvalContext, subject: Subject) -> None:
        self._sources.pop(subject.name, None)
