"""First-token probabilities for arbitrary prompts: P(yes) for recognition, P(option) for two-choice QA.

These mirror :meth:`Engine.yes_probabilities` (same tokenisation, same yes/no token sets, same
normalisation ``P(yes) / (P(yes) + P(no))``) but take any prompt, with or without concepts and with
or without a photo, so the baselines (vanilla model, text-description prompts) are scored exactly
like the learned concept. Only the engine's public methods are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine import ImageLike, Engine


def yes_probabilities(
    engine: Engine,
    prompt: str,
    images: Sequence[ImageLike | None],
    concepts: Sequence[str] = (),
    batch_size: int = 8,
) -> list[float]:
    """``P(yes) / (P(yes) + P(no))`` of the first answer token of ``prompt`` asked about each photo."""
    return engine.prompt_yes_probabilities(prompt, images, concepts, batch_size)


def option_token_ids(engine: Engine, letters: Sequence[str]) -> list[list[int]]:
    """For each option letter, the first token ids of its plausible spellings ("A", " A", "A.")."""
    tok = engine.adapter.tokenizer
    out = []
    for letter in letters:
        ids = {tok(v, add_special_tokens=False)["input_ids"][0] for v in (letter, f" {letter}", f"{letter}.")}
        out.append(sorted(ids))
    # a spelling whose first token is shared between letters would say nothing: drop shared ids
    shared = set.intersection(*(set(x) for x in out)) if len(out) > 1 else set()
    return [[i for i in ids if i not in shared] or ids for ids in out]


@torch.no_grad()
def option_probabilities(
    engine: Engine,
    prompts: Sequence[str],
    images: Sequence[ImageLike | None],
    letters: Sequence[str] = ("A", "B"),
    concepts: Sequence[str] = (),
    batch_size: int = 8,
) -> list[list[float]]:
    """For each (prompt, photo) the normalised probabilities of the option letters as first answer token."""
    ids = option_token_ids(engine, letters)
    out: list[list[float]] = []
    for i in range(0, len(prompts), batch_size):
        items = [engine.encode(p, image=img, concepts=concepts) for p, img in zip(prompts[i : i + batch_size], images[i : i + batch_size])]
        probs = engine.first_token_probabilities(items)
        mass = torch.stack([probs[:, x].sum(-1) for x in ids], dim=-1)
        out += (mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)).tolist()
    return out


@torch.no_grad()
def answer_loglikelihoods(
    engine: Engine,
    prompts: Sequence[str],
    answers: Sequence[str],
    images: Sequence[ImageLike | None],
    concepts: Sequence[str] = (),
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """For each (prompt, answer, photo): the summed log-probability of the answer's tokens as the
    model's reply, and their count (the end-of-turn token is not scored). This is how
    lm-evaluation-harness scores multiple choice: each option's text is a continuation, so no option
    letter, and no bias towards a letter, is involved."""
    out: list[tuple[float, int]] = []
    for i in range(0, len(prompts), batch_size):
        chunk = range(i, min(i + batch_size, len(prompts)))
        items = [engine.encode(prompts[j], image=images[j], answer=answers[j], concepts=concepts) for j in chunk]
        hidden, ids, answer = engine.hidden_states(items)
        for row, enc in enumerate(items):
            positions = [t for t, a in enumerate(enc.answer_mask) if a][:-1]  # drop the end-of-turn token
            if not positions:
                out.append((float("-inf"), 0))
                continue
            pos = torch.tensor(positions, device=hidden.device)
            logits = engine.bank.logits(hidden[row, pos - 1], engine.adapter.lm_head).float()
            logp = logits.log_softmax(-1).gather(-1, ids[row, pos].unsqueeze(-1)).sum().item()
            out.append((logp, len(positions)))
    return out
