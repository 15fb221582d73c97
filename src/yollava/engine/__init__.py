"""The engine in two layers.

- :mod:`yollava.engine.model` — :class:`ConceptModel`: the frozen VLM that tokenises, embeds, runs,
  scores and generates with a concept bank passed to every call (no concepts of its own).
- :mod:`yollava.engine.pipeline` — :class:`YoLLaVA`: that model plus one bank and a concepts folder;
  chat / stream / recognise / first-token probabilities / loss. ``YoLLaVA.with_bank`` gives another
  pipeline over the same model with its own bank (what the server makes per request and per job).
"""

from ..data.templates import RECOGNITION_QUERY
from .model import ConceptModel, Encoded, ImageLike
from .pipeline import PromptLimit, Recognition, YoLLaVA

__all__ = ["RECOGNITION_QUERY", "ConceptModel", "Encoded", "ImageLike", "PromptLimit", "Recognition", "YoLLaVA"]
