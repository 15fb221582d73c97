"""yollava: teach a vision-language model your own subjects from a few photos (Yo'LLaVA and beyond).

The names below load on first use (PEP 562), so ``import yollava`` and ``yollava --help`` do not load torch.
Concepts are made with ``YoLLaVA.personalize`` (or :func:`yollava.personalize.personalize`, the same steps).
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

__version__ = _version("yollava")  # pyproject.toml's

#: public name -> the module that defines it
_EXPORTS = {
    "Concept": "yollava.concepts",
    "DataConfig": "yollava.recipes",
    "RECIPES": "yollava.recipes",
    "Recipe": "yollava.recipes",
    "Recognition": "yollava.prompts",
    "TrainConfig": "yollava.recipes",
    "YoLLaVA": "yollava.api",
    "get_recipe": "yollava.recipes",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from .api import YoLLaVA
    from .concepts import Concept
    from .prompts import Recognition
    from .recipes import RECIPES, DataConfig, Recipe, TrainConfig, get_recipe


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'yollava' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
