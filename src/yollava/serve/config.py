"""Server settings: where state lives, the training recipe for uploaded concepts, and request limits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import default_server_home
from ..recipes import DataConfig, Recipe, TrainConfig, get_recipe


@dataclass
class Limits:
    """Request limits and per-user quotas (``yollava serve --help`` lists the flags that set them)."""

    #: the whole HTTP request body (multipart uploads, JSON with data-URL photos)
    max_request_bytes: int = 64 * 1024 * 1024
    #: nesting of a JSON request body ([ and {); deeper bodies are refused before parsing
    max_json_depth: int = 32
    #: values in the arrays and objects of a JSON request body (a chat with 64 messages holds a few hundred);
    #: more are refused before parsing
    max_json_values: int = 100_000
    #: one uploaded photo / one photo in a data URL (decoded bytes)
    max_photo_bytes: int = 16 * 1024 * 1024
    #: photos per concept upload (the method needs a few views of the subject: 3-10 work best)
    min_photos: int = 3
    max_photos: int = 20
    #: pixels per photo, checked from the header before decoding (24 MP: 6000x4000)
    max_pixels: int = 24_000_000
    #: decoded photos are shrunk to at most this many pixels on their longer side (JPEGs while decoding);
    #: the models see 336-1024 px, so nothing they use is lost
    max_photo_side: int = 1536
    #: photos being decoded at once, across all requests
    max_decoding: int = 2
    #: memory the photos being decoded may take at once, across all requests: each photo is charged what
    #: its format needs per pixel (a WebP 16.5 bytes, a PNG 5; see ``photos.DECODE_BYTES_PER_PIXEL``)
    #: before it is decoded; one that alone needs more is refused (413)
    max_decode_bytes: int = 400 * 1024 * 1024
    #: photos in one chat conversation
    max_chat_images: int = 4
    #: messages in one chat request
    max_messages: int = 64
    #: characters of text in one chat request
    max_chat_chars: int = 32_000
    #: concepts one chat request may introduce (named in the text or in ``concepts``)
    max_chat_concepts: int = 16
    #: tokens of one prompt (the text, each photo's visual tokens, each concept's k+1); the model's
    #: context length also bounds prompt + max_tokens
    max_prompt_tokens: int = 4096
    #: the most tokens a request may ask for (``max_tokens``), and the default when it asks for none
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    #: an imported concept zip (compressed, and the tensor member uncompressed)
    max_import_bytes: int = 16 * 1024 * 1024
    #: an imported concept's metadata JSON (a trained concept's is a few KiB)
    max_meta_bytes: int = 256 * 1024
    #: latent tokens of an imported concept (the training recipe's k must not exceed it either)
    max_k: int = 64
    #: concepts per user (ready, plus queued or running training jobs for new names)
    max_concepts_per_user: int = 100
    #: bytes a user's folder may hold (concept files, photos of queued jobs)
    max_storage_bytes_per_user: int = 1024 * 1024 * 1024
    #: generation requests running at once (they share the model token by token); more wait
    max_concurrent_generations: int = 16
    #: a request waiting longer than this for a generation slot gets 503
    queue_timeout_s: float = 120.0
    #: queued + running training jobs per user
    max_jobs_per_user: int = 4
    #: pictures one ``POST /v1/images/generations`` may ask for (``n``; models that draw only)
    max_images_per_request: int = 4
    #: pictures a user may have drawn in any sliding hour (per server process; 0: no limit)
    max_images_per_user_per_hour: int = 100


_MIB = 1024 * 1024
#: ``yollava serve`` options that set limits: option -> (Limits field, the option's unit)
LIMIT_FLAGS = {
    "max_photos": ("max_photos", 1),
    "max_request_mb": ("max_request_bytes", _MIB),
    "max_concurrent": ("max_concurrent_generations", 1),
    "max_concepts": ("max_concepts_per_user", 1),
    "max_storage_mb": ("max_storage_bytes_per_user", _MIB),
    "max_k": ("max_k", 1),
    "max_meta_kb": ("max_meta_bytes", 1024),
    "max_import_mb": ("max_import_bytes", _MIB),
    "max_megapixels": ("max_pixels", 1_000_000),
    "max_photo_side": ("max_photo_side", 1),
    "max_decoding": ("max_decoding", 1),
    "max_decode_mb": ("max_decode_bytes", _MIB),
    "max_prompt_tokens": ("max_prompt_tokens", 1),
    "max_images": ("max_images_per_request", 1),
    "max_images_per_hour": ("max_images_per_user_per_hour", 1),
}


def limits_from_flags(**flags: float | None) -> Limits:
    """Limits with the given ``yollava serve`` options applied (None: the default); ValueError if one is bad."""
    limits = Limits()
    for flag, value in flags.items():
        if value is None:
            continue
        field_name, unit = LIMIT_FLAGS[flag]
        if value <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive")
        setattr(limits, field_name, int(value * unit))
    if limits.max_meta_bytes > _MIB:
        raise ValueError("--max-meta-kb may be at most 1024 (the library refuses larger metadata files)")
    return limits


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
    #: serve the interactive API documentation at /docs and the schema at /openapi.json (off by default)
    docs: bool = False

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
