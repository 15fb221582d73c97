"""Chat that knows who is in the photo: the concepts found are introduced before the question, and a question that
names concepts hears first what their concept heads see in the photo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .embedding import embedder_for
from .index import index_for, library_sources
from .verify import Found, WhoResult, concepts_loaded, heads_on, who


def who_prompt(found: Sequence[Found]) -> tuple[str, list[str]]:
    """The hint put before the question and the concepts to introduce: trained concepts by their
    identifier (their definition comes with them), recognition-only ones by their plain name."""
    if not found:
        return "", []
    trained = [f.concept for f in found if f.stage != "recognition"]
    named = [f"<{f.concept}>" if f.stage != "recognition" else f.concept for f in found]
    return f"In this photo: {', '.join(named)}.", trained


def presence_hint(checked: Sequence[Found]) -> str:
    """The sentence put before a question that names concepts: those their heads find in the photo, "In this photo:
    <bo>." ("" when none). The language model alone reads a named concept in a photo worse than its head does
    (MyVLM-29: weighted 0.66 vs 0.81). Chosen on the dev subjects, 3 seeds (``scripts/hinted_recognition.py``,
    ``benchmarks/results/recipe_dev_v2/hinted_recognition.md``): chat's yes/no rose on every seed; also saying
    "Not in this photo: <x>." rose more on average but fell below the plain model on one seed."""
    present = [f"<{f.concept}>" for f in checked if f.present]
    return f"In this photo: {', '.join(present)}." if present else ""


def named_in_photo(engine, names: Sequence[str], image) -> list[Found]:
    """The concept heads' answers about ``image`` for those of ``names`` that have one (loaded or in the library)."""
    index = index_for(engine)
    index.sync(library_sources(engine))
    return heads_on(index, engine, embedder_for(engine), names, image)


@dataclass
class WhoChat:
    answer: str
    #: the concepts present: found in the photo, or named and found there by their heads
    found: list[Found]
    #: every named concept a head answered for, present or not
    checked: list[Found] = field(default_factory=list)


def chat(engine, prompt: str, image, *, max_found: int = 3, mode: str = "auto", who_result: WhoResult | None = None,
         follow_heads: bool = True, **chat_kwargs) -> WhoChat:
    """Answer ``prompt`` about ``image``; when the prompt names no concept, the concepts found in the photo
    are introduced first (their definitions plus "In this photo: <bo>."), RAP-style. When it names concepts (or
    ``concepts=`` asks for them), ``follow_heads``: what their concept heads see in the photo comes first
    (:func:`presence_hint`); concepts without a head are left to the language model."""
    asked = list(chat_kwargs.pop("concepts", None) or [])
    named = list(dict.fromkeys([*engine.mentioned_concepts(prompt), *asked]))
    if named:
        checked = named_in_photo(engine, named, image) if follow_heads and image is not None else []
        hint = presence_hint(checked)
        answer = engine.chat(f"{hint} {prompt}" if hint else prompt, image=image, concepts=asked, **chat_kwargs)
        return WhoChat(answer, [f for f in checked if f.present], checked)
    result = who_result or who(engine, image, mode=mode)
    found = result.found[:max_found]
    hint, names = who_prompt(found)
    index = index_for(engine)
    concepts = [index.entries[n].concept for n in names if n in index.entries]
    with concepts_loaded(engine, concepts):
        answer = engine.chat(f"{hint} {prompt}" if hint else prompt, image=image, concepts=names, **chat_kwargs)
    return WhoChat(answer, found)
