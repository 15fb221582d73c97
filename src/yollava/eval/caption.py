"""Caption recall (MyVLM protocol, Yo'LLaVA Table 6): the share of generated captions of a subject's
test photos that name the subject.

The model is asked "Describe this photo." about each test photo with the subject introduced the
method's way (the learned concept for ``yollava``; a description for the text baselines; nothing
for ``vanilla``). A caption counts when it contains the identifier (``<bo>``) for ``yollava`` (outside a
repeated concept definition "<bo> is <bo_1>..."), or the subject's plain name (case-insensitive) for the
prompting baselines, which cannot emit ``<bo>``.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from ..prompts import CAPTION_QUERY
from .datasets import RecognitionDataset, Subject
from .driver import Task
from .methods import EvalContext, Method
from .registry import method_names, register_task
from .report import _f, _footer, _header
from .store import RunStore

PROTOCOL_VERSION = 3  # 2: a quoted concept definition no longer counts as naming the subject; 3: a plain name, as whole words


def names_subject(caption: str, mention: str) -> bool:
    """Does ``caption`` name the subject? An identifier counts only outside a quoted concept definition
    ("<bo> is <bo_1><bo_2>..."): a caption that repeats the prompt's introduction has not named anyone."""
    if mention.startswith("<"):
        quoted = re.compile(re.escape(mention) + r"\s*is\s*(?:<" + re.escape(mention[1:-1]) + r"_\d+>\s*)+\.?")
        return mention in quoted.sub(" ", caption)
    # a plain name counts as whole words only: "bo" is not named by "a booby" or "its body"
    return any(re.search(r"(?<!\w)" + re.escape(m) + r"(?!\w)", caption, re.I) for m in {mention, mention.replace(" ", "_")})


@register_task("caption")
class CaptionTask(Task):
    """"Describe this photo." on each subject's test photos; a caption counts when it names the subject."""

    #: the paper's numbers, quoted in the report
    paper_note: ClassVar[str] = (
        "Paper (MyVLM protocol): caption recall Yo'LLaVA 100.0 %, MyVLM 96.0 % (Table 6).")

    def __init__(self, dataset: RecognitionDataset, *, subjects: list[str] | None = None, max_subjects: int | None = None,
                 max_photos: int | None = None, max_new_tokens: int = 48, seed: int = 0):
        self.dataset = dataset
        self.subjects = dataset.select(subjects, max_subjects)
        self.max_photos, self.max_new_tokens, self.seed = max_photos, max_new_tokens, seed

    def protocol(self, common: dict[str, Any]) -> dict[str, Any]:
        return {"task": "caption", "version": PROTOCOL_VERSION, "dataset": self.dataset.name, "seed": self.seed,
                "split": self.dataset.split(), "query": CAPTION_QUERY, "max_new_tokens": self.max_new_tokens, "max_photos": self.max_photos,
                "model": common["model"], "recipe": common["recipe"], "train": common["train"], "data": common["data"],
                "caption_tokens": common["caption_tokens"], "summary_tokens": common["summary_tokens"]}

    def score(self, ctx: EvalContext, method: Method, subject: Subject, info: dict, started: float) -> dict[str, Any]:
        photos = subject.test[: self.max_photos] if self.max_photos else subject.test
        p = method.prompting(ctx, subject)
        t1 = time.perf_counter()
        captions = [ctx.engine.chat(p.ask(CAPTION_QUERY), image=ph, concepts=p.concepts, max_new_tokens=self.max_new_tokens) for ph in photos]
        hits = [names_subject(c, p.mention) for c in captions]
        return {"info": info, "mention": p.mention, "photos": [ph.name for ph in photos], "captions": captions, "hits": hits,
                "recall": sum(hits) / len(hits) if hits else None,
                "prepare_seconds": round(t1 - started, 2), "caption_seconds": round(time.perf_counter() - t1, 2)}

    def describe(self, record: dict) -> str:
        return f"recall {record['recall']:.2f} over {len(record['hits'])} captions"

    def finish(self, results: dict, protocol: dict, store: RunStore) -> dict:
        return results | {"protocol": {k: v for k, v in protocol.items() if k != "split"}, "notes": self.dataset.notes,
                          "run_dir": str(store.dir)}

    @classmethod
    def summarise(cls, r: dict) -> dict:
        return {"recall": r["recall"], "n": len(r["hits"])}

    @classmethod
    def pool(cls, rows: list[dict]) -> dict:
        hits = [h for r in rows for h in r["hits"]]
        return {"subjects": len(rows), "n": len(hits), "recall": sum(hits) / len(hits) if hits else None}

    @classmethod
    def extras(cls, rows: dict[str, list[tuple[str, dict]]]) -> dict:
        """One example caption per subject for each method."""
        examples: dict[str, list] = {}
        for m, mine in rows.items():
            for s, r in mine:
                examples.setdefault(m, []).extend(
                    {"subject": s, "photo": ph, "caption": c, "hit": h} for ph, c, h in list(zip(r["photos"], r["captions"], r["hits"]))[:1])
        return {"examples": examples}

    # ---- the report -------------------------------------------------------------------------
    @classmethod
    def markdown(cls, results: dict, title: str | None = None) -> str:
        lines = _header(results, title or "Caption recall", cls.paper_note)
        lines += ["| method | subjects | captions | recall |", "|---|---:|---:|---:|"]
        for m in results["methods"]:
            o = results["overall"].get(m, {})
            lines.append(f"| {m} | {o.get('subjects', 0)} | {o.get('n', 0)} | **{_f(o.get('recall'))}** |")
        examples = results.get("examples", {})
        if examples:
            lines += ["", "## Example captions", ""]
            for m, items in examples.items():
                for it in items[:3]:
                    lines.append(f"- {m}, {it['subject']} ({it['photo']}): “{it['caption']}” → {'named' if it['hit'] else 'not named'}")
        lines += _footer(results, notes=False)
        return "\n".join(lines) + "\n"

    @classmethod
    def chart_series(cls, results: dict) -> dict[str, list]:
        return {"recall": [results["overall"].get(m, {}).get("recall") for m in results["methods"]]}


#: the methods ``yollava eval caption`` offers (registered for the "caption" task)
CAPTION_METHODS = method_names("caption")
