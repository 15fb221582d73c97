"""Descriptions of pool classes in the LLM's own words, the targets of pocket v2's "Describe this photo." samples.

The base LLM is asked, without any photo, "Describe what a {class} looks like in one sentence."; its first sentence
is kept. Training the photo's answer towards words the LLM already produces keeps its language its own; colour facts
from the pixels are added per photo (:func:`.samples.describe_answer`). Cached in ``<work>/descriptions.json``.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

from .data import article
from .samples import DESCRIBE_CLASS

REFUSALS = re.compile(r"^(I |I'm|As an|Sorry|Unfortunately)|cannot|can't", re.IGNORECASE)


def first_sentence(text: str, limit: int = 220) -> str | None:
    """The answer's first sentence, or None if it is a refusal, empty or runs on past ``limit`` characters."""
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!])(\s|$)", text)
    sentence = m.group(1) if m else ""
    if not sentence or len(sentence) > limit or REFUSALS.search(sentence):
        return None
    return sentence


def class_descriptions(engine, names: list[str], batch_size: int = 20, max_new_tokens: int = 60, log=print) -> dict[str, str]:
    """``{class: sentence}`` for the names the LLM describes acceptably (others are left out)."""
    out: dict[str, str] = {}
    t0 = time.time()
    for i in range(0, len(names), batch_size):
        chunk = names[i : i + batch_size]
        answers = engine.chat_many([(DESCRIBE_CLASS.format(a=article(n)), None) for n in chunk], max_new_tokens=max_new_tokens)
        for n, a in zip(chunk, answers):
            s = first_sentence(a)
            if s:
                out[n] = s
        log(f"descriptions {i + len(chunk)}/{len(names)} ({len(out)} kept), {time.time() - t0:.0f} s")
    return out


def load_or_make_descriptions(engine_factory, feats: dict, work: Path, n_classes: int = 400, seed: int = 0, log=print) -> dict[str, str]:
    """The cached descriptions, made first (``n_classes`` seen classes, seeded) if missing."""
    path = work / "descriptions.json"
    if path.is_file():
        return json.loads(path.read_text())["descriptions"]
    seen = sorted({p.name for p in feats["photos"] if p.name and p.split == "train"})
    names = sorted(random.Random(seed).sample(seen, min(n_classes, len(seen))))
    desc = class_descriptions(engine_factory(), names, log=log)
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"question": DESCRIBE_CLASS, "seed": seed, "descriptions": desc}, indent=1))
    return desc
