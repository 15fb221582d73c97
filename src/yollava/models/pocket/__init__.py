"""``pocket``: the embedded default VLM (EfficientNet-Lite0 + MLP projector + Qwen2.5-Coder-0.5B), CPU-sized.

``pocket`` is the shipped version (v2: 4x4 + 1 visual tokens, a LoRA merged into the LLM); ``pocket-v1`` the first
(3x3 + 1 tokens, projector only), kept loadable so that every run committed on it can be reproduced and concepts
trained on it still load.
"""

from .. import register
from .adapter import V1_WEIGHTS_DIR, PocketAdapter, load_pocket as _load_pocket
from .model import PocketConfig, PocketVLM


@register("pocket")
def load_pocket(name: str = "pocket", **kwargs) -> PocketAdapter:
    return _load_pocket(name, **kwargs)


@register("pocket-v1")
def load_pocket_v1(name: str = "pocket-v1", **kwargs) -> PocketAdapter:
    kwargs.setdefault("weights_dir", V1_WEIGHTS_DIR)
    return _load_pocket(name, **kwargs)


__all__ = ["PocketAdapter", "PocketConfig", "PocketVLM", "load_pocket", "load_pocket_v1"]
