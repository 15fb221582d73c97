"""Yo'LLaVA two-choice question answering (paper §5.2), scored by the option letter.

- ``text``: ``annotations/yollava-text-only-qa.rap.json``, 400 questions, 10 per subject, no photo.
- ``visual``: ``annotations/yollava-visual-qa.official.json``, 170 questions on test photos; only
  ``<bo>``'s test photos exist here, so only its 8 questions can be asked (the rest are counted as
  missing and reported).

Every question is asked twice, options as given and swapped (A<->B): the answer keys are skewed
(text-only: 390 of 400 correct answers are "A"; visual: 99 A / 71 B), so a model that always says "A"
would score 0.975 as given. ``accuracy`` is the mean over both orders (always-"A" -> 0.5);
``accuracy_as_given`` is the paper's protocol; ``accuracy_both_orders`` needs both right.

The prompt lists the options LLaVA-style and the answer is read from the first answer token:
the probability of "A" vs "B" (each summed over its spellings "A", " A", "A."), which does not
depend on parsing free text. A question is right when the correct letter is the more probable.

Beside the letters, every question is also scored by **option likelihood**, the way
lm-evaluation-harness scores multiple choice: the question alone is asked and each option's text is
scored as the reply (``accuracy_likelihood``: the option with the higher mean log-probability per
token; ``accuracy_likelihood_sum``: higher total). No letter is involved, so a model that always
says "A" gains nothing: this measures what the model knows about the subject.

Training photos for the ``yollava`` method: ``<bo>`` and ``<mam>`` have 10 official training photos;
every other subject has exactly one here (``one_image_per_concept/<name>.jpg``); ``<shiba-black>``
has none (the method is reported as not run for it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..images import list_images
from ..paths import default_data_root
from .datasets import Subject, yollava_descriptions, _strip_identifier
from .driver import Task
from .methods import EvalContext, Method
from .registry import method_names, register_task
from .report import _f, _footer, _header
from .scoring import answer_loglikelihoods, option_probabilities
from .store import RunStore

QA_FILES = {"text": "yollava-text-only-qa.rap.json", "visual": "yollava-visual-qa.official.json"}
MCQ_PROMPT = "{question}\nA. {a}\nB. {b}\nAnswer with the option's letter from the given choices directly."
_SKS = re.compile(r"<sks>|\bsks\b")
PROTOCOL_VERSION = 2  # 2: every question asked with its options as given and swapped


@dataclass
class QAItem:
    subject: str
    qid: str
    question: str  # names the subject "{subject}"
    options: dict[str, str]
    correct: str
    image: Path | None = None

    def prompt(self, mention: str, swapped: bool = False) -> str:
        """The question with its options listed as given, or (``swapped``) with A and B exchanged."""
        q = _SKS.sub("{subject}", self.question.replace("{", "{{").replace("}", "}}"))
        a, b = (self.options["B"], self.options["A"]) if swapped else (self.options["A"], self.options["B"])
        return MCQ_PROMPT.format(question=q.format(subject=mention), a=a, b=b)

    def correct_letter(self, swapped: bool = False) -> str:
        return {"A": "B", "B": "A"}[self.correct] if swapped else self.correct


def _visual_photo(root: Path, key: str) -> Path | None:
    """``./yollava-data/test/bo/3.png`` -> ``yollava/bo/test/3.jpg`` if it exists here."""
    parts = Path(key).parts
    if "test" not in parts:
        return None
    i = parts.index("test")
    subject, stem = parts[i + 1], Path(parts[-1]).stem
    folder = root / subject / "test"
    for p in list_images(folder) if folder.is_dir() else []:
        if p.stem == stem:
            return p.resolve()
    return None


def load_qa(kind: str, data_root: str | Path | None = None) -> tuple[list[QAItem], dict]:
    """The questions whose photos exist here, and counts of those that could not be asked."""
    import json

    if kind not in QA_FILES:
        raise ValueError(f"QA kind must be one of {', '.join(QA_FILES)}, not {kind!r}")
    root = Path(data_root or default_data_root()) / "yollava"
    raw = json.loads((root / "annotations" / QA_FILES[kind]).read_text(encoding="utf-8"))
    items, missing = [], 0
    for subject, qs in raw.items():
        for key, q in qs.items():
            options = q.get("options") or q.get("option")
            image = None
            if kind == "visual":
                image = _visual_photo(root, key)
                if image is None:
                    missing += 1
                    continue
            items.append(QAItem(subject, key, q["question"], options, q["correct_answer"], image))
    return items, {"file": QA_FILES[kind], "questions_in_file": len(items) + missing, "asked": len(items), "missing_photos": missing}


def qa_subjects(names: list[str], data_root: str | Path | None = None) -> list[Subject]:
    """The Yo'LLaVA subjects with the training photos available here and their human descriptions."""
    root = Path(data_root or default_data_root()) / "yollava"
    desc, cats = yollava_descriptions(data_root)
    out = []
    for name in names:
        train_dir = root / name / "train"
        if train_dir.is_dir() and list_images(train_dir):
            train = [p.resolve() for p in list_images(train_dir)]
        else:
            single = [p.resolve() for p in list_images(root / "one_image_per_concept") if p.stem == name]
            train = single
        d = desc.get(name)
        out.append(Subject(name, train, [], description=_strip_identifier(d, f"<{name}>", name.replace("-", " ").replace("_", " ")) if d else None,
                           category="person" if cats.get(name) == "person" else "object"))
    return out


@register_task("qa")
class QATask(Task):
    """Two-choice questions per subject, scored by the option letter (both orders) and by option likelihood."""

    chance_line = True
    #: the paper's numbers, quoted in the report
    paper_note: ClassVar[str] = (
        "Paper (LLaVA-1.5-13B): text-only QA Yo'LLaVA 0.883, vanilla 0.659, + human text 0.790; visual QA 0.929 / 0.899 / 0.925 (Table 5).")

    def __init__(self, kind: str, *, subjects: list[str] | None = None, max_subjects: int | None = None,
                 data_root: Path | None = None):
        items, counts = load_qa(kind, data_root)
        names = list(dict.fromkeys(it.subject for it in items))
        if subjects:
            unknown = [s for s in subjects if s not in names]
            if unknown:
                raise ValueError(f"no {kind} questions for {', '.join(unknown)} (have: {', '.join(names)})")
            names = [s for s in names if s in subjects]
        names = names[:max_subjects] if max_subjects else names
        self.kind, self.items, self.counts = kind, items, counts
        self.subjects = qa_subjects(names, data_root)

    def protocol(self, common: dict[str, Any]) -> dict[str, Any]:
        return {"task": "qa", "kind": self.kind, "version": PROTOCOL_VERSION, "prompt": MCQ_PROMPT, "model": common["model"],
                "recipe": common["recipe"], "train": common["train"], "data": common["data"], "caption_tokens": common["caption_tokens"],
                "summary_tokens": common["summary_tokens"], "training_photos": {s.name: [p.name for p in s.train] for s in self.subjects}}

    def stored_protocol(self, protocol: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in protocol.items() if k != "training_photos"}

    def score(self, ctx: EvalContext, method: Method, subject: Subject, info: dict, started: float) -> dict[str, Any]:
        engine = ctx.engine
        mine = [it for it in self.items if it.subject == subject.name]
        p = method.prompting(ctx, subject)
        t1 = time.perf_counter()
        record: dict[str, Any] = {"info": info, "questions": [it.qid for it in mine], "n_training_photos": len(subject.train)}
        for swapped, key in ((False, ""), (True, "_swapped")):
            prompts = [p.ask_raw(it.prompt(p.mention, swapped)) for it in mine]
            probs = option_probabilities(engine, prompts, [it.image for it in mine], ("A", "B"), concepts=p.concepts)
            correct = [it.correct_letter(swapped) for it in mine]
            record[f"answers{key}"] = ["A" if pa >= pb else "B" for pa, pb in probs]
            record[f"correct{key}"] = correct
            record[f"p_correct{key}"] = [round(pr[0] if c == "A" else pr[1], 6) for pr, c in zip(probs, correct)]
        record |= _likelihood_answers(engine, p, mine)
        record |= {"prepare_seconds": round(t1 - started, 2), "score_seconds": round(time.perf_counter() - t1, 2)}
        record |= _qa_scores(record)
        return record

    def describe(self, record: dict) -> str:
        return (f"accuracy {record['accuracy']:.2f} (as given {record['accuracy_as_given']:.2f}, "
                f"both orders {record['accuracy_both_orders']:.2f}) on {len(record['questions'])} questions")

    def finish(self, results: dict, protocol: dict, store: RunStore) -> dict:
        counts = self.counts
        return results | {
            "kind": self.kind, "protocol": dict(protocol), "counts": counts, "run_dir": str(store.dir),
            "notes": f"{counts['asked']} of {counts['questions_in_file']} questions in {counts['file']} asked "
                     f"({counts['missing_photos']} need photos that are not here); training photos for yollava: <bo>, <mam> 10 "
                     "official ones, every other subject the single photo in one_image_per_concept, <shiba-black> none."}

    @classmethod
    def summarise(cls, r: dict) -> dict:
        return {**_qa_scores(r), "n": len(r["answers"]), "n_training_photos": r.get("n_training_photos")}

    @classmethod
    def pool(cls, rows: list[dict]) -> dict:
        keys = ["answers", "correct", "answers_swapped", "correct_swapped"]
        keys += [k for k in ("answers_likelihood", "answers_likelihood_sum") if rows and all(k in r for r in rows)]
        merged = {key: [x for r in rows for x in r[key]] for key in keys}
        pc = [p for r in rows for p in r["p_correct"] + r["p_correct_swapped"]]
        return {"subjects": len(rows), "n": len(merged["answers"]), **_qa_scores(merged),
                "answered_A": (sum(a == "A" for a in merged["answers"] + merged["answers_swapped"]) / (2 * len(merged["answers"]))
                               if merged["answers"] else None),
                "mean_p_correct": sum(pc) / len(pc) if pc else None}

    # ---- the report -------------------------------------------------------------------------
    @classmethod
    def markdown(cls, results: dict, title: str | None = None) -> str:
        lines = _header(results, title or f"Question answering ({results.get('kind', '')})", cls.paper_note)
        lines += ["| method | subjects | questions | option likelihood (per token) | likelihood (sum) | letter: both orders, mean | as given | swapped | right in both | answers \"A\" | mean P(correct) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in results["methods"]:
            o = results["overall"].get(m, {})
            lines.append(f"| {m} | {o.get('subjects', 0)} | {o.get('n', 0)} | **{_f(o.get('accuracy_likelihood'))}** | {_f(o.get('accuracy_likelihood_sum'))} | "
                         f"**{_f(o.get('accuracy'))}** | {_f(o.get('accuracy_as_given'))} | "
                         f"{_f(o.get('accuracy_swapped'))} | {_f(o.get('accuracy_both_orders'))} | {_f(o.get('answered_A'))} | {_f(o.get('mean_p_correct'))} |")
        lines += ["", "Option likelihood (as lm-evaluation-harness scores multiple choice): the question is asked alone and each option's "
                  "text is scored as the reply; the option with the higher mean log-probability per token (or total) is the answer. "
                  "No letter is involved. Letter scoring: each question is asked twice, options as given and with A and B swapped; "
                  "\"both orders, mean\" is the mean over both (a model that always answers \"A\" gets 0.5). \"As given\" is the paper's "
                  "protocol, but the answer keys are skewed (text-only: 390 of 400 correct answers are A; visual: 99 A / 71 B), so "
                  "always-\"A\" would score 0.975 on text as given."]
        if len(results["subjects"]) > 1:
            lines += ["", "## Per subject (option likelihood / letter, both orders; letter as given in brackets)", "", "| subject | " + " | ".join(results["methods"]) + " |",
                      "|---|" + "---:|" * len(results["methods"])]
            for s in results["subjects"]:
                cells = []
                for m in results["methods"]:
                    r = results["per_subject"].get(m, {}).get(s)
                    cells.append("–" if r is None else "n/a" if "unavailable" in r
                                 else f"{_f(r.get('accuracy_likelihood'), 2)} / {_f(r['accuracy'], 2)} ({_f(r['accuracy_as_given'], 2)})")
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines += _footer(results)
        return "\n".join(lines) + "\n"

    @classmethod
    def chart_series(cls, results: dict) -> dict[str, list]:
        overall = results["overall"]
        return {"option likelihood": [overall.get(m, {}).get("accuracy_likelihood") for m in results["methods"]],
                "letter (both orders)": [overall.get(m, {}).get("accuracy") for m in results["methods"]]}


def _likelihood_answers(engine, p, items: list[QAItem]) -> dict:
    """Each option's text scored as the reply to the bare question (no letters listed)."""
    prompts, answers, images = [], [], []
    for it in items:
        q = p.ask_raw(_SKS.sub("{subject}", it.question.replace("{", "{{").replace("}", "}}")).format(subject=p.mention))
        for letter in ("A", "B"):
            prompts.append(q)
            answers.append(str(it.options[letter]))
            images.append(it.image)
    scored = answer_loglikelihoods(engine, prompts, answers, images, concepts=p.concepts)
    by_mean, by_sum = [], []
    for i in range(len(items)):
        (sa, na), (sb, nb) = scored[2 * i], scored[2 * i + 1]
        by_mean.append("A" if sa / max(na, 1) >= sb / max(nb, 1) else "B")
        by_sum.append("A" if sa >= sb else "B")
    return {"answers_likelihood": by_mean, "answers_likelihood_sum": by_sum,
            "loglik": [[round(s, 4), n] for s, n in scored]}


def _qa_scores(r: dict) -> dict:
    """As given (the paper's number), options swapped, their mean (an always-"A" model gets 0.5 however
    the answer key is skewed: the text-only key here is 390 A / 10 B), and right in both orders."""
    n = len(r["answers"])
    if not n:
        return {"accuracy_as_given": None, "accuracy_swapped": None, "accuracy": None, "accuracy_both_orders": None}
    given = [a == c for a, c in zip(r["answers"], r["correct"])]
    swapped = [a == c for a, c in zip(r["answers_swapped"], r["correct_swapped"])]
    out = {"accuracy_as_given": sum(given) / n, "accuracy_swapped": sum(swapped) / n,
           "accuracy": (sum(given) + sum(swapped)) / (2 * n), "accuracy_both_orders": sum(g and w for g, w in zip(given, swapped)) / n}
    for key in ("likelihood", "likelihood_sum"):  # records made before likelihood scoring have neither
        if r.get(f"answers_{key}") is not None:
            out[f"accuracy_{key}"] = sum(a == c for a, c in zip(r[f"answers_{key}"], r["correct"])) / n
    return out


#: the methods ``yollava eval qa`` offers (registered for the "qa" task)
QA_METHODS = method_names("qa")
