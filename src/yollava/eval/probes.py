"""Diagnostic probes: where along the model does a subject's identity get lost? (recognition only)

Each probe is the concept head's recipe (logistic regression, the subject's training photos vs the negatives
the training-set builder chose, :class:`~yollava.eval.methods.HeadMethod`) on another representation of the
photo, so the probes and ``head`` of one run differ only in what the classifier reads:

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

from ..engine import RECOGNITION_QUERY
from ..images import load_image
from .methods import EvalContext, HeadMethod, Unavailable
from .registry import register_method


#: base model -> {(probe kind, photo path): features}, shared by a probe and its ``-z`` twin in one process
_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _FeatureProbe(HeadMethod):
    """The concept head's classifier on features this class computes (cached per photo for the process)."""

    kind = ""

    def __init__(self, name: str | None = None, standardize: bool = False):
        super().__init__(name)
        self.standardize = standardize

    def features(self, ctx: EvalContext, path: Path) -> np.ndarray:
        raise NotImplementedError

    def classifier(self):
        if not self.standardize:
            return super().classifier()
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), super().classifier())

    def _embed(self, ctx: EvalContext, paths: list[Path]) -> np.ndarray:
        cache = _FEATURES.setdefault(ctx.engine.model, {})
        for p in paths:
            if (self.kind, str(p)) not in cache:
                cache[self.kind, str(p)] = self.features(ctx, p)
        x = np.stack([cache[self.kind, str(p)] for p in paths])
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)  # the head's features are unit vectors too


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
