"""Model adapters: one file per VLM family, chosen by name or by the checkpoint's ``model_type``.

``load_model("pocket")`` gives the embedded default; any other string is a local folder or a model
id already in the Hugging Face cache (nothing is downloaded: ``local_files_only=True``).

``load_model(name, device="cuda", dtype="bf16")``: ``device`` and
``dtype`` default to ``auto`` (see :mod:`yollava.runtime`: CUDA + bf16 when present, else CPU + fp32).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..paths import DEFAULT_MODEL
from .base import EncodedImage, Message, VLMAdapter

# model_type (from config.json) or builtin name -> loader(name_or_path, **kwargs) -> VLMAdapter
_LOADERS: dict[str, Callable[..., VLMAdapter]] = {}


def register(*keys: str):
    def deco(fn):
        for k in keys:
            _LOADERS[k] = fn
        return fn

    return deco


def _import_families() -> None:
    """Import every family module (``hf_*.py`` and ``pocket``) once: each registers its loaders when imported, so a
    new family is one new module here (and its row in ``catalog.FAMILIES``)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if (info.name.startswith("hf_") and info.name != "hf_common") or info.name == "pocket":
            importlib.import_module(f"{__name__}.{info.name}")


def hf_families() -> list[str]:
    """``model_type`` values a Hugging Face checkpoint may have."""
    _import_families()
    return sorted(k for k in _LOADERS if not k.startswith("pocket"))


def cache_path(model_id: str) -> Path:
    """Where the Hugging Face cache keeps ``model_id``'s snapshots (``$HF_HOME/hub/models--org--name``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--"))


def load_model(name_or_path: str = DEFAULT_MODEL, **kwargs) -> VLMAdapter:
    _import_families()
    if name_or_path in _LOADERS:
        return _LOADERS[name_or_path](name_or_path, **kwargs)
    from transformers import AutoConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..runtime import quiet_library

    try:
        with quiet_library():
            config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError) as e:
        where = "" if Path(name_or_path).exists() or name_or_path.count("/") != 1 else f" (looked for {cache_path(name_or_path)})"
        raise FileNotFoundError(
            f"cannot load model {name_or_path!r}: not a built-in name (pocket, pocket-v1), "
            f"not a local folder, and not in the Hugging Face cache{where}; no download happens here. ({e})"
        ) from None
    loader = _LOADERS.get(config.model_type)
    if loader is None:
        supported = hf_families()
        raise ValueError(f"model type {config.model_type!r} of {name_or_path} is not supported; supported: {supported}")
    return loader(str(Path(name_or_path)) if Path(name_or_path).exists() else name_or_path, **kwargs)


__all__ = ["DEFAULT_MODEL", "EncodedImage", "Message", "VLMAdapter", "cache_path", "hf_families", "load_model", "register"]
