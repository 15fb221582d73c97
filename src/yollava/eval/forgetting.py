"""No forgetting: with several concepts loaded, a question that names none of them gets exactly the
answer the base model gives with no concept loaded (greedy decoding), with and without a photo.

Concept rows live outside the frozen model, so this must hold bit for bit; the check also compares
the first-token logits (over the base vocabulary) and reports the largest difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..engine import ImageLike, Engine
from .driver import Task
from .registry import register_task

GENERAL_QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about a dog playing in the park.",
    "What is 12 times 7?",
    "Name three colours of the rainbow.",
]
PHOTO_QUESTIONS = [
    "Describe this photo.",
    "What is the main object in this photo?",
    "What colour is the main object in this photo?",
    "Is there a dog in this photo? Answer with a single word or phrase.",
]


@torch.no_grad()
def _first_logits(engine: Engine, question: str, image: ImageLike | None) -> torch.Tensor:
    enc = engine.encode(question, image=image)
    hidden, _, _ = engine.hidden_states([enc])
    return engine.bank.logits(hidden[:, -1], engine.adapter.lm_head).float()[0, : engine.adapter.vocab_size]


def _answers(engine, cases, max_new_tokens):
    return [(engine.chat(q, image=img, max_new_tokens=max_new_tokens), _first_logits(engine, q, img)) for q, img in cases]


def forgetting_check(
    engine: Engine,
    concepts: Sequence[str | Path] = (),
    n_random: int = 0,
    images: Sequence[ImageLike] = (),
    questions: Sequence[str] = GENERAL_QUESTIONS,
    photo_questions: Sequence[str] = PHOTO_QUESTIONS,
    max_new_tokens: int = 32,
    k: int = 16,
) -> dict:
    """Answers with no concept loaded vs with ``concepts`` (names in the engine's concepts folder or
    paths to concept files) plus ``n_random`` randomly initialised ones loaded. The bank is restored."""
    saved = {n: engine.bank[n] for n in engine.bank.names()}
    for n in list(saved):
        engine.unload_concept(n)
    cases = [(q, None) for q in questions] + [(q, img) for img in images for q in photo_questions]
    loaded: list[str] = []
    try:
        before = _answers(engine, cases, max_new_tokens)
        for c in concepts:
            loaded.append(engine.load_concept(c).name)
        gen = torch.Generator().manual_seed(1234)
        emb_std = engine.adapter.embed_tokens.weight.detach().float().std().item()
        head_std = engine.adapter.lm_head.weight.detach().float().std().item()
        for i in range(n_random):
            concept = engine.new_concept(f"probe{i}", k=k, seed=i)
            with torch.no_grad():  # input rows far from the mean embedding; output row like a typical vocabulary row
                concept.input_rows.add_(emb_std * torch.randn(concept.input_rows.shape, generator=gen).to(concept.input_rows.dtype))
                concept.output_row.add_(head_std * torch.randn(concept.output_row.shape, generator=gen).to(concept.output_row.dtype))
            loaded.append(concept.name)
        after = _answers(engine, cases, max_new_tokens)
    finally:
        for n in engine.bank.names():
            engine.unload_concept(n)
        for c in saved.values():
            engine.add_concept(c, replace=True)
    rows = []
    for (q, img), (a0, l0), (a1, l1) in zip(cases, before, after):
        rows.append({"question": q, "photo": None if img is None else str(getattr(img, "name", img)), "answer_without": a0,
                     "answer_with": a1, "identical": a0 == a1, "max_logit_diff": float((l0 - l1).abs().max())})
    # bit-for-bit is the promise: a logit that moved fails the check even when no greedy answer changed
    return {
        "task": "forgetting", "concepts_loaded": loaded, "cases": len(rows),
        "identical": sum(r["identical"] for r in rows),
        "passed": all(r["identical"] and r["max_logit_diff"] == 0.0 for r in rows) and bool(loaded),
        "max_logit_diff": max((r["max_logit_diff"] for r in rows), default=0.0), "rows": rows,
    }


def forgetting_markdown(result: dict, command: str | None = None) -> str:
    lines = ["# No-forgetting check", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"Concepts loaded: {', '.join(f'<{c}>' for c in result['concepts_loaded']) or 'none'}. "
              f"{result['identical']}/{result['cases']} answers identical (greedy), largest first-token logit difference "
              f"{result['max_logit_diff']:.3g}: **{'PASSED' if result['passed'] else 'FAILED'}**.", "",
              "| question | photo | identical | answer (no concept / with concepts) |", "|---|---|---|---|"]
    for r in result["rows"]:
        ans = r["answer_without"].replace("|", "\\|").replace("\n", " ")
        if not r["identical"]:
            ans += " / " + r["answer_with"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['question']} | {r['photo'] or '–'} | {'yes' if r['identical'] else '**no**'} | {ans[:160]} |")
    return "\n".join(lines) + "\n"


@register_task("forgetting")
class ForgettingTask(Task):
    """Not run per (method, subject): one check of the base model with concepts loaded (:func:`forgetting_check`).
    Registered so that its results have a report like every task's (``yollava eval report``)."""

    def __init__(self, concepts: Sequence[str | Path] = (), n_random: int = 0, images: Sequence[ImageLike] = (),
                 questions: Sequence[str] = GENERAL_QUESTIONS, photo_questions: Sequence[str] = PHOTO_QUESTIONS,
                 max_new_tokens: int = 32, k: int = 16):
        self.subjects = []
        self.options = dict(concepts=concepts, n_random=n_random, images=images, questions=questions, photo_questions=photo_questions,
                            max_new_tokens=max_new_tokens, k=k)

    def run(self, engine: Engine) -> dict:
        return forgetting_check(engine, **self.options)

    @staticmethod
    def markdown(results: dict, title: str | None = None) -> str:
        return forgetting_markdown(results, results.get("command"))
