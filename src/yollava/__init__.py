"""yollava: teach a vision-language model your own subjects from a few photos (Yo'LLaVA and beyond)."""

__version__ = "0.1.0"

from .concepts import Concept  # noqa: E402
from .engine import Recognition, YoLLaVA  # noqa: E402
from .personalize import personalize  # noqa: E402
from .recipes import RECIPES, DataConfig, Recipe, get_recipe  # noqa: E402
from .train import TrainConfig  # noqa: E402

__all__ = ["Concept", "DataConfig", "RECIPES", "Recipe", "Recognition", "TrainConfig", "YoLLaVA", "__version__", "get_recipe", "personalize"]
