"""The embedder behind visual signatures and queries (the image pool's EfficientNet-Lite0 unless
:func:`set_embedder` says otherwise), and the views a photo is looked at in."""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def embedder_id(embedder) -> str:
    from ..data.pool import embedder_name

    return embedder_name(embedder)


_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DEFAULT_EMBEDDER: list = []
_EMBEDDER_LOCK = threading.Lock()


def default_embedder():
    """The image pool's default embedder (EfficientNet-Lite0), loaded once per process."""
    with _EMBEDDER_LOCK:
        if not _DEFAULT_EMBEDDER:
            from ..data.pool import default_embedder as make

            _DEFAULT_EMBEDDER.append(make())
        return _DEFAULT_EMBEDDER[0]


#: each engine's who-is-here index (:func:`yollava.who.index.index_for`); a new embedder drops it
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_embedder(engine, embedder) -> None:
    """Use ``embedder`` (anything with ``embed(list[PIL.Image]) -> (n, d)`` and a ``fingerprint``) for
    ``engine``'s signatures and queries instead of the default one."""
    _EMBEDDERS[engine] = embedder
    _INDEXES.pop(engine, None)


def embedder_for(engine) -> Any:
    return _EMBEDDERS.get(engine) or default_embedder()


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(np.atleast_2d(np.asarray(v, dtype=np.float32)))
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def embed_images(embedder, images: Sequence[str | Path | Image.Image]) -> np.ndarray:
    """(n, d) L2-normalised features of photos (paths or PIL images); unreadable files raise InvalidImageError."""
    from ..images import load_image

    if not images:
        return np.zeros((0, 0), np.float32)
    pil = [load_image(im) for im in images]
    v = embedder.embed(pil)
    v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    return _normalise(v)


def query_views(image) -> list[Image.Image]:
    """The views a photo is looked at in (:func:`yollava.images.photo_views`); a concept's head answers with its
    best view, so two subjects in one photo can both be found."""
    from ..images import photo_views

    return photo_views(image)


def embed_query(embedder, image, multi_crop: bool = True) -> np.ndarray:
    """(views, d) features of a photo to recognise in (one row without ``multi_crop``)."""
    return embed_images(embedder, query_views(image) if multi_crop else [image])
