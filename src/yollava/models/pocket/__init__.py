"""``pocket``: the embedded default VLM (EfficientNet-Lite0 + MLP projector + Qwen2.5-Coder-0.5B), CPU-sized."""

from .. import register
from .adapter import PocketAdapter, load_pocket as _load_pocket
from .model import PocketConfig, PocketVLM


@register("pocket")
def load_pocket(name: str = "pocket", **kwargs) -> PocketAdapter:
    return _load_pocket(name, **kwargs)


__all__ = ["PocketAdapter", "PocketConfig", "PocketVLM", "load_pocket"]
