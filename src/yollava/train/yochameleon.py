"""Train a Yo'Chameleon concept: one identifier, a generation token set and an understanding token set, learned on a
unified model (one that reads and draws: Janus) from a few photos.

Per step, one batch of *understanding* samples (Yo'LLaVA's recognition and question answering: :class:`Sample`) and
one batch of *reconstruction* samples (a photo's image codes as the answer to "A photo of <bo>.") share one AdamW
update of the concept's rows: its k+1 input rows, the identifier's output row and the latent tokens' output rows.
The base model is frozen and never written to.

- **Two token sets**: the concept is introduced as ``<bo> is <g-tokens><u-tokens>.``
  (:class:`~yollava.concepts.UnifiedConcept`); ``shared_tokens`` (an ablation) uses one set for both tasks.
- **Self-prompting**: each answer starts with the set its task needs: ``<u-tokens>`` before a text answer,
  ``<g-tokens>`` before the picture, so the model learns to recall the right set first. The one-word "Yes"/"No" answers to
  the product's recognition query are the exception: ``recognize`` and ``who`` read that answer's first token, so it
  stays the first token (a deviation from the paper, which has no such query). ``self_prompting=False`` (an ablation)
  answers directly.
- **Soft positives**: look-alike pool photos (:mod:`yollava.data.soft_positives`), ranked by similarity, reconstructed
  from fewer generation tokens the less alike they are (the self-prompt, or without self-prompting the introduction,
  names only the first n); ``soft_positives=0`` is the ablation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..concepts import Concept, UnifiedConcept
from ..data.samples import Sample
from ..data.soft_positives import soft_positive_token_counts
from ..engine import Engine
from ..engine.drawing import DRAW_PROMPT, DrawItem, draw_prompt, image_loss, require_writer
from ..errors import NotEnoughPhotosError
from ..images import load_image
from ..recipes import UNIFIED_RECIPES, UnifiedRecipe, YoChameleonConfig, get_unified_recipe  # noqa: F401  (re-exported)

#: answers that are the product's one-word recognition decision (never self-prompted: ``recognize`` reads their first token)
ONE_WORD_ANSWERS = frozenset({"Yes", "No"})


@dataclass
class UnifiedTrainResult:
    concept: UnifiedConcept
    history: list[dict[str, Any]]
    seconds: float


def new_unified_concept(engine: Engine, name: str, config: YoChameleonConfig) -> UnifiedConcept:
    """Fresh rows for ``name`` (as :meth:`Engine.new_concept` makes them) split into the config's token sets, loaded
    into ``engine``'s bank in place of any concept of that name."""
    a = engine.adapter
    base = Concept.initialise(name, a.embed_tokens.weight, a.lm_head.weight, k=config.k, seed=config.seed)
    concept = UnifiedConcept.create(base, config.generation_tokens, config.understanding_tokens, shared=config.shared_tokens,
                                    self_prompting=config.self_prompting, seed=config.seed)
    return engine.add_concept(concept, replace=True)


def understanding_answer(concept: UnifiedConcept, answer: str) -> str:
    """The trained answer: the understanding tokens first when the concept self-prompts (not before a one-word
    recognition decision)."""
    if not concept.self_prompting or answer.strip() in ONE_WORD_ANSWERS:
        return answer
    return f"{concept.task_prefix('understanding')} {answer}"


def reconstruction_item(engine: Engine, concept: UnifiedConcept, codes: torch.Tensor, n_tokens: int | None = None,
                        weight: float = 1.0) -> DrawItem:
    """"A photo of <bo>." answered with the photo's codes; ``n_tokens``: describe it with only the first n generation
    tokens (a soft positive) — in the self-prompt, or without self-prompting in the concept's introduction."""
    gen = concept.task_tokens("generation")
    n = len(gen) if n_tokens is None else max(1, min(n_tokens, len(gen)))
    if concept.self_prompting:
        intro, prefix = concept.system_prefix, concept.task_prefix("generation", n)
    else:
        shown = gen[:n] + [t for t in concept.tokens[1:] if t not in gen]  # the understanding tokens stay
        intro, prefix = f"{concept.identifier} is {''.join(shown)}.", ""
    text = f"{intro} {DRAW_PROMPT.format(identifier=concept.identifier)}"
    return DrawItem(draw_prompt(engine.model, engine.bank, text, prefix), codes, weight)


def _codes(engine: Engine, images: Sequence[Any]) -> list[torch.Tensor]:
    writer = require_writer(engine.adapter)
    photos = [im if not isinstance(im, (str, Path)) else load_image(im) for im in images]
    return list(writer.image_codes(photos).cpu()) if photos else []


def train_unified(engine: Engine, name: str, samples: Sequence[Sample], photos: Sequence[Any],
                  soft_positives: Sequence[Any] = (), config: YoChameleonConfig | None = None,
                  recipe_name: str | None = None) -> UnifiedTrainResult:
    """Learn ``name`` on ``engine`` (a model that draws) from understanding ``samples``, the subject's ``photos``
    (reconstructed with all generation tokens) and ``soft_positives`` (look-alikes ranked best first; only the first
    ``config.soft_positives`` are used). Returns the trained concept, loaded in ``engine``'s bank; save it with
    :meth:`Engine.save_concept`."""
    cfg = config or YoChameleonConfig()
    require_writer(engine.adapter)
    if not photos:
        raise NotEnoughPhotosError(f"<{name}>: Yo'Chameleon needs photos of the subject to learn to draw it")
    concept = new_unified_concept(engine, name, cfg)
    concept.requires_grad_(True)
    params = [concept.input_rows, concept.output_row, concept.latent_output_rows]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    understanding = [engine.encode(s.question, image=s.image, answer=understanding_answer(concept, s.answer), concepts=[name])
                     for s in samples]
    soft = list(soft_positives)[: cfg.soft_positives]
    counts = soft_positive_token_counts(len(soft), len(concept.task_tokens("generation")))
    drawing = [reconstruction_item(engine, concept, c) for c in _codes(engine, photos)]
    drawing += [reconstruction_item(engine, concept, c, n) for c, n in zip(_codes(engine, soft), counts)]

    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    rng = random.Random(cfg.seed)
    for epoch in range(cfg.epochs):
        u_order, d_order = list(range(len(understanding))), list(range(len(drawing)))
        rng.shuffle(u_order)
        rng.shuffle(d_order)
        steps = max(-(-len(u_order) // cfg.batch_size), -(-len(d_order) // cfg.batch_size))
        sums = {"understanding": 0.0, "image": 0.0, "self_prompt": 0.0}
        for step in range(steps):
            loss = torch.zeros((), device=engine.adapter.device)
            u_batch = _cycle(u_order, step, cfg.batch_size)
            if u_batch:
                u_loss = engine.loss([understanding[i] for i in u_batch])
                loss = loss + u_loss
                sums["understanding"] += u_loss.item()
            d_batch = _cycle(d_order, step, cfg.batch_size)
            img, prompt_loss = image_loss(engine.model, engine.bank, [drawing[i] for i in d_batch])
            loss = loss + img + (prompt_loss if prompt_loss is not None else 0.0)
            sums["image"] += img.item()
            sums["self_prompt"] += prompt_loss.item() if prompt_loss is not None else 0.0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append({"epoch": epoch, **{k: round(v / steps, 5) for k, v in sums.items()}})
    seconds = time.perf_counter() - start
    concept.requires_grad_(False)
    concept.zero_grad(set_to_none=True)
    recipe = {"name": recipe_name or "yochameleon-custom", "unified": asdict(cfg)}
    concept.meta.update(
        recipe=recipe,
        metrics={"history": history, "seconds": round(seconds, 2), "samples_seen": cfg.epochs * (len(understanding) + len(drawing))},
        counts={"photos": len(photos), "soft_positives": len(soft), "understanding": len(understanding)},
        soft_positive_tokens=counts,
    )
    return UnifiedTrainResult(concept, history, seconds)


def _cycle(order: list[int], step: int, size: int) -> list[int]:
    """The ``step``-th batch of ``order``, wrapping around (the shorter of the two sample lists repeats)."""
    if not order:
        return []
    return [order[(step * size + j) % len(order)] for j in range(min(size, len(order)))]
