"""Where yollava keeps user data (concepts) and caches. ``YOLLAVA_HOME`` / ``YOLLAVA_CACHE`` override."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_home() -> Path:
    return Path(os.environ.get("YOLLAVA_HOME") or platformdirs.user_data_dir("yollava"))


def cache_home() -> Path:
    return Path(os.environ.get("YOLLAVA_CACHE") or platformdirs.user_cache_dir("yollava"))


def default_concepts_dir() -> Path:
    return data_home() / "concepts"


def default_data_root() -> Path:
    """The shared real-photo data (``../shared/data`` from the project root) or ``YOLLAVA_DATA``."""
    env = os.environ.get("YOLLAVA_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("../shared/data")
