"""Diagnostic probes: where along the model does a subject's identity get lost? (recognition only)

Each probe is the concept head (:class:`yollava.who.ConceptHead`: logistic regression, the subject's training photos
vs the negatives :mod:`yollava.data.negatives` chooses for a head, threshold 0.5) on another representation
of the photo. Unlike ``head`` it reads each photo once: no augmented views of the training photos and no multi-crop
queries (they would multiply the language-model passes), so ``probe-*`` and ``head`` differ in what the classifier
reads and in those two steps:

- ``head``: the image pool's embedder (EfficientNet-Lite0 pooled features), as MyVLM's concept heads;
- ``probe-pooled`` (``pocket`` only): the vision tower's pooled grid before the projector (what the projector reads,
  every token, flattened): with ``probe-visual`` it tells pooling apart from the projector;
- ``probe-visual``: the visual tokens the language model receives (the base model's own vision tower and
  projector, every token, flattened);
- ``probe-llm``: the frozen language model's last hidden state at the answer position of the product's
  recognition query about a placeholder subject ("Can you see if sks is in this photo? ..."), no concept.

Each probe also comes as ``<name>-z``: the same features standardised per dimension on the subject's training photos
before the classifier (language-model embeddings have a few huge dimensions that dominate a unit-length vector).

A concept can only use what reaches the language model: if ``probe-visual`` separates a subject as well as
``head`` but the learned concept does not, the recipe is what bounds it; if ``probe-visual`` is already far
below ``head``, the base model's vision path is.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import torch

from ..data.negatives import choose_negatives
from ..engine import RECOGNITION_QUERY
from ..images import load_image
from ..who import ConceptHead
from ..who.signature import DEFAULT_HEAD_EASY, DEFAULT_HEAD_HARD
from .datasets import Subject
from .methods import EvalContext, Method, Prompting, Unavailable
from .registry import register_method


#: base model -> {(probe kind, photo path): features}, shared by a probe and its ``-z`` twin in one process
_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _FeatureProbe(Method):
    """The concept head's classifier on features this class computes (cached per photo for the process)."""

    kind = ""
    tasks = ("recognition",)

    def __init__(self, name: str | None = None, standardize: bool = False):
        super().__init__(name)
        self.standardize = standardize
        self._heads: dict[str, ConceptHead] = {}

    def features(self, ctx: EvalContext, path: Path) -> np.ndarray:
        raise NotImplementedError

    def _embed(self, ctx: EvalContext, paths: list[Path]) -> np.ndarray:
        cache = _FEATURES.setdefault(ctx.engine.model, {})
        for p in paths:
            if (self.kind, str(p)) not in cache:
                cache[self.kind, str(p)] = self.features(ctx, p)
        x = np.stack([cache[self.kind, str(p)] for p in paths])
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)  # the head's features are unit vectors too

    def prepare(self, ctx: EvalContext, subject: Subject) -> dict:
        if not subject.train:
            raise Unavailable("no training photo")
        pool = ctx.pool
        vectors, positives, skipped = pool.embed(list(subject.train))
        if skipped:
            raise Unavailable(f"unreadable training photo(s): {skipped[:3]}")
        negatives = choose_negatives(pool, positives, vectors, n_hard=DEFAULT_HEAD_HARD, n_easy=DEFAULT_HEAD_EASY,
                                     seed=ctx.train.seed)
        if not negatives.trained:
            raise Unavailable("the image pool gave no negatives (empty pool?)")
        # threshold 0.5: the head's 0.6 was chosen for its own features and views, not for these
        head = ConceptHead.fit(self._embed(ctx, positives), self._embed(ctx, negatives.trained), threshold=0.5,
                               standardize=self.standardize, n_hard=len(negatives.hard))
        self._heads[subject.name] = head
        return {**head.info, "threshold": head.threshold}

    def threshold(self, ctx: EvalContext, subject: Subject) -> float:
        return self._heads[subject.name].threshold

    def recognition_scores(self, ctx: EvalContext, subject: Subject, images: list[Path]) -> list[float]:
        return self._heads[subject.name].probability(self._embed(ctx, list(images))).tolist()

    def prompting(self, ctx: EvalContext, subject: Subject) -> Prompting:
        raise Unavailable("a probe only recognises; it cannot answer questions")

    def release(self, ctx: EvalContext, subject: Subject) -> None:
        self._heads.pop(subject.name, None)


@register_method("probe-pooled-z", tasks=("recognition",), standardize=True)
@register_method("probe-pooled", tasks=("recognition",))
class PooledGridProbe(_FeatureProbe):
    """Logistic regression on ``pocket``'s pooled feature grid, before its projector (flattened)."""

    kind = "pooled"

    def features(self, ctx: EvalContext, path: Path) -> np.ndarray:
        model = ctx.engine.adapter.model
        if not hasattr(model, "pooled_features"):
            raise Unavailable(f"probe-pooled reads pocket's pooled grid; {ctx.engine.adapter.family} has none")
        return model.pooled_features([load_image(path)])[0].float().flatten().cpu().numpy()


@register_method("probe-visual-z", tasks=("recognition",), standardize=True)
@register_method("probe-visual", tasks=("recognition",))
class VisualTokensProbe(_FeatureProbe):
    """Logistic regression on the visual tokens the language model receives (flattened)."""

    kind = "visual"

    def features(self, ctx: EvalContext, path: Path) -> np.ndarray:
        with torch.no_grad():
            return ctx.engine.encode_image(path).features.float().flatten().cpu().numpy()


@register_method("probe-llm-z", tasks=("recognition",), standardize=True)
@register_method("probe-llm", tasks=("recognition",))
class AnswerStateProbe(_FeatureProbe):
    """Logistic regression on the frozen LLM's last hidden state where the recognition answer is predicted."""

    kind = "llm"

    placeholder = "sks"

    def features(self, ctx: EvalContext, path: Path) -> np.ndarray:
        engine = ctx.engine
        encoded = engine.encode(RECOGNITION_QUERY.format(identifier=self.placeholder), image=path)
        with torch.no_grad():
            hidden, _, _ = engine.hidden_states([encoded])
        return hidden[0, len(encoded.input_ids) - 1].float().cpu().numpy()
