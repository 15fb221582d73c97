"""Server settings: where state lives, the training recipe for uploaded concepts, and request limits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import data_home
from ..personalize import DataConfig
from ..recipes import Recipe, get_recipe
from ..train import TrainConfig


def default_server_home() -> Path:
    return data_home() / "server"


@dataclass
class Limits:
    #: the whole HTTP request body (multipart uploads, JSON with data-URL photos)
    max_request_bytes: int = 64 * 1024 * 1024
    #: one uploaded photo / one photo in a data URL (decoded bytes)
    max_photo_bytes: int = 16 * 1024 * 1024
    #: photos per concept upload
    max_photos: int = 20
    #: pixels per photo, checked from the header before decoding (yollava.images.MAX_PIXELS)
    max_pixels: int = 64_000_000
    #: photos in one chat conversation
    max_chat_images: int = 4
    #: messages in one chat request
    max_messages: int = 64
    #: characters of text in one chat request
    max_chat_chars: int = 32_000
    #: the most tokens a request may ask for (``max_tokens``), and the default when it asks for none
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    #: an imported concept zip (compressed and each member uncompressed)
    max_import_bytes: int = 64 * 1024 * 1024
    #: generation requests running at once (they share the model token by token); more wait
    max_concurrent_generations: int = 16
    #: a request waiting longer than this for a generation slot gets 503
    queue_timeout_s: float = 120.0
    #: queued + running training jobs per user
    max_jobs_per_user: int = 4


@dataclass
class ServerConfig:
    model: str = "pocket"
    home: Path = field(default_factory=default_server_home)
    host: str = "127.0.0.1"
    port: int = 8000
    #: the recipe every uploaded concept is trained with: a named recipe (``yollava.recipes``), its settings
    recipe_name: str = "fast"
    train: TrainConfig = field(default_factory=lambda: get_recipe("fast").train)
    data: DataConfig = field(default_factory=lambda: get_recipe("fast").data)
    #: folders of generic photos for negatives (None: the shared pool, as the CLI does)
    pool_dirs: list[Path] | None = None
    limits: Limits = field(default_factory=Limits)
    #: on start, resume training jobs a previous run left unfinished (else mark them failed)
    resume_jobs: bool = True
    #: keep uploaded photos and training checkpoints after a job ends (default: removed)
    keep_uploads: bool = False
    #: the model id reported in OpenAI responses (default: ``model``)
    model_name: str | None = None

    def __post_init__(self):
        self.home = Path(self.home)

    @property
    def served_model_name(self) -> str:
        if self.model_name:
            return self.model_name
        return self.model if self.model == "pocket" else Path(self.model).name or self.model

    def recipe(self) -> dict[str, Any]:
        return {"name": self.recipe_name, "train": dataclasses.asdict(self.train), "data": dataclasses.asdict(self.data)}


def recipe_from_dict(d: dict[str, Any]) -> tuple[TrainConfig, DataConfig, str]:
    """Rebuild a stored recipe, ignoring fields this version does not know (forward compatible); a job
    stored before recipes had names was trained with the library's defaults then, the paper's."""
    recipe = Recipe.from_dict({"name": "paper", **d})
    return recipe.train, recipe.data, recipe.name
