"""Chat that knows who is in the photo: the concepts found are introduced before the question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .index import index_for
from .verify import Found, WhoResult, concepts_loaded, who


def who_prompt(found: Sequence[Found]) -> tuple[str, list[str]]:
    """The hint put before the question and the concepts to introduce: trained concepts by their
    identifier (their definition comes with them), recognition-only ones by their plain name."""
    if not found:
        return "", []
    trained = [f.concept for f in found if f.stage != "recognition"]
    named = [f"<{f.concept}>" if f.stage != "recognition" else f.concept for f in found]
    return f"In this photo: {', '.join(named)}.", trained


@dataclass
class WhoChat:
    answer: str
    found: list[Found]


def chat(engine, prompt: str, image, *, max_found: int = 3, mode: str = "auto", who_result: WhoResult | None = None,
         **chat_kwargs) -> WhoChat:
    """Answer ``prompt`` about ``image``; when the prompt names no concept, the concepts found in the photo
    are introduced first (their definitions plus "In this photo: <bo>."), RAP-style."""
    if engine.mentioned_concepts(prompt) or chat_kwargs.get("concepts"):
        return WhoChat(engine.chat(prompt, image=image, **chat_kwargs), [])
    result = who_result or who(engine, image, mode=mode)
    found = result.found[:max_found]
    hint, names = who_prompt(found)
    index = index_for(engine)
    concepts = [index.entries[n].concept for n in names if n in index.entries]
    with concepts_loaded(engine, concepts):
        answer = engine.chat(f"{hint} {prompt}" if hint else prompt, image=image, concepts=names, **chat_kwargs)
    return WhoChat(answer, found)
