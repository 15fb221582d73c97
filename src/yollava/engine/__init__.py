"""The engine in two layers.

- :mod:`yollava.engine.model` — :class:`ConceptModel`: the frozen VLM that tokenises, embeds, runs,
  scores and generates with a concept bank passed to every call (no concepts of its own).
- :mod:`yollava.engine.pipeline` — :class:`Engine`: that model plus one bank and a concepts folder;
  chat / stream / yes-probabilities / first-token probabilities / loss. ``Engine.with_bank`` gives another
  pipeline over the same model with its own bank (what the server makes per request and per job).
"""

from ..prompts import RECOGNITION_QUERY, Recognition
from .model import ConceptModel, Encoded, ImageLike
from .pipeline import Engine, PromptLimit

__all__ = ["RECOGNITION_QUERY", "ConceptModel", "Encoded", "Engine", "ImageLike", "PromptLimit", "Recognition"]
