"""Model adapters: one file per VLM family, chosen by name or by the checkpoint's ``model_type``.

``load_model("pocket")`` gives the embedded default; any other string is a local folder or a model
id already in the Hugging Face cache (nothing is downloaded: ``local_files_only=True``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .base import EncodedImage, Message, VLMAdapter

DEFAULT_MODEL = "pocket"

# model_type (from config.json) or builtin name -> loader(name_or_path, **kwargs) -> VLMAdapter
_LOADERS: dict[str, Callable[..., VLMAdapter]] = {}


def register(*keys: str):
    def deco(fn):
        for k in keys:
            _LOADERS[k] = fn
        return fn

    return deco


def _import_families() -> None:
    from . import hf_llava, hf_qwen2_vl, pocket  # noqa: F401  (registration side effects)


def load_model(name_or_path: str = DEFAULT_MODEL, **kwargs) -> VLMAdapter:
    _import_families()
    if name_or_path in _LOADERS:
        return _LOADERS[name_or_path](name_or_path, **kwargs)
    from transformers import AutoConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"cannot load model {name_or_path!r}: not a built-in name ({', '.join(sorted(k for k in _LOADERS if '_' not in k or k == 'pocket'))}), "
            f"not a local folder, and not in the Hugging Face cache (no download happens here). ({e})"
        ) from None
    loader = _LOADERS.get(config.model_type)
    if loader is None:
        supported = sorted(k for k in _LOADERS if k != "pocket")
        raise ValueError(f"model type {config.model_type!r} of {name_or_path} is not supported; supported: {supported}")
    return loader(str(Path(name_or_path)) if Path(name_or_path).exists() else name_or_path, **kwargs)


__all__ = ["DEFAULT_MODEL", "EncodedImage", "Message", "VLMAdapter", "load_model", "register"]
