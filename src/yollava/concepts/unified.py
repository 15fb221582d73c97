"""A Yo'Chameleon concept: one identifier and two sets of latent tokens, one for drawing and one for understanding.

The concept is introduced as ``<bo> is <g-tokens><u-tokens>.`` (the poster's prompt): latent tokens
``<bo_1>..<bo_g>`` are the generation set and ``<bo_{g+1}>..<bo_{g+u}>`` the understanding set, so the
introduction is exactly :attr:`Concept.system_prefix` and everything that introduces a concept keeps working. With
one shared set (an ablation) both tasks use all of ``<bo_1>..<bo_k>``.

*Self-prompting*: the model first emits the set a task needs (``<u-tokens>`` before a text answer, ``<g-tokens>``
before an image), then answers. For that the latent tokens need output rows of their own:
``latent_output_rows`` ``(k, hidden)``, trained with the rest and saved in the same safetensors file; a plain
(understanding-only) concept has none, and its latent tokens are never generated, as before.

The metadata key ``unified`` says which tokens are which::

    {"generation": [1, 16], "understanding": [17, 32], "self_prompting": true}

(first and last latent index of each set, 1-based, inclusive).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import CorruptConceptError
from .concept import Concept, latent_tokens
from .schema import LATENT_OUTPUT

TASKS = ("generation", "understanding")


def token_sets_problems(unified: Any, k: int | None = None) -> list[str]:
    """Why ``meta["unified"]`` is not a valid description of a concept's two token sets (empty list: valid)."""
    if not isinstance(unified, dict):
        return ["unified must be an object naming the generation and understanding token sets"]
    problems = []
    for task in TASKS:
        span = unified.get(task)
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in span)
                and 1 <= span[0] <= span[1] and (k is None or span[1] <= k)):
            problems.append(f"unified.{task} must be [first, last] latent indexes with 1 <= first <= last"
                            + (f" <= k = {k}" if k is not None else "") + f" (got {str(span)[:40]})")
    if not isinstance(unified.get("self_prompting", False), bool):
        problems.append("unified.self_prompting must be true or false")
    return problems


class UnifiedConcept(Concept):
    """A :class:`Concept` whose latent tokens form a generation set and an understanding set, with output rows for
    the latent tokens (self-prompting). Build one with :meth:`create`; files load back as this class when their
    metadata has ``unified``."""

    def __init__(self, name: str, input_rows: torch.Tensor, output_row: torch.Tensor, meta: dict[str, Any] | None = None,
                 extra_tensors: dict[str, torch.Tensor] | None = None, latent_output_rows: torch.Tensor | None = None):
        super().__init__(name, input_rows, output_row, meta, extra_tensors)
        problems = token_sets_problems(self.meta.get("unified"), self.k)
        if problems:
            raise CorruptConceptError(f"concept <{name}>: " + "; ".join(problems))
        if latent_output_rows is None:
            raise CorruptConceptError(f"concept <{name}>: a concept with generation tokens needs {LATENT_OUTPUT}")
        if tuple(latent_output_rows.shape) != (self.k, input_rows.shape[1]):
            raise CorruptConceptError(f"concept <{name}>: {LATENT_OUTPUT} must have shape ({self.k}, {input_rows.shape[1]}), "
                                      f"got {tuple(latent_output_rows.shape)}")
        self.latent_output_rows = nn.Parameter(latent_output_rows.clone())

    @classmethod
    def create(cls, base: Concept, generation: int, understanding: int, *, shared: bool = False,
               self_prompting: bool = True, seed: int = 0) -> UnifiedConcept:
        """A new unified concept from freshly initialised rows ``base`` (``base.k`` must be ``generation +
        understanding``, or either one when ``shared``). Latent output rows start at ``base.output_row`` plus small
        noise (the mean output row, as a new token gets)."""
        if generation < 1 or understanding < 1:
            raise ValueError("a unified concept needs at least one generation and one understanding token")
        k = generation if shared else generation + understanding
        if shared and generation != understanding:
            raise ValueError("one shared token set: give the same size for generation and understanding")
        if base.k != k:
            raise ValueError(f"the rows hold k = {base.k} latent tokens, the token sets need {k}")
        sets = {"generation": [1, k], "understanding": [1, k]} if shared else \
            {"generation": [1, generation], "understanding": [generation + 1, k]}
        out = base.output_row.detach().float()
        gen = torch.Generator().manual_seed(seed + 7919)
        noise = torch.randn(k, out.shape[0], generator=gen) * (out.std() * 0.1 + 1e-6)
        meta = {**base.meta, "unified": {**sets, "self_prompting": self_prompting}}
        return cls(base.name, base.input_rows.detach(), base.output_row.detach(), meta, base.extra_tensors,
                   (out + noise).to(base.output_row.dtype))

    @property
    def self_prompting(self) -> bool:
        return bool(self.meta["unified"].get("self_prompting", False))

    @property
    def shared(self) -> bool:
        return self.meta["unified"]["generation"] == self.meta["unified"]["understanding"]

    def task_span(self, task: str) -> tuple[int, int]:
        """First and last latent index (1-based) of ``task``'s token set."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
        first, last = self.meta["unified"][task]
        return first, last

    def task_tokens(self, task: str, n: int | None = None) -> list[str]:
        """``task``'s latent tokens, or its first ``n`` (a soft-positive image is described with fewer)."""
        first, last = self.task_span(task)
        names = latent_tokens(self.name, last)[first - 1 :]
        return names if n is None else names[: max(0, min(n, len(names)))]

    def task_prefix(self, task: str, n: int | None = None) -> str:
        """What self-prompting emits before answering ``task``: its token set as text."""
        return "".join(self.task_tokens(task, n))


def can_draw(concept: Concept) -> bool:
    """Whether ``concept`` has generation tokens (a Yo'Chameleon concept)."""
    return isinstance(concept, UnifiedConcept)
