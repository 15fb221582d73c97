"""Where yollava keeps user data (concepts, the server's state) and caches, and the model it uses by default.
``YOLLAVA_HOME`` / ``YOLLAVA_CACHE`` override the folders."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


#: the model used when none is named: the embedded ``pocket`` (``yollava models`` lists the others)
DEFAULT_MODEL = "pocket"


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


def default_server_home() -> Path:
    """The server's state folder (database, users' concepts, jobs): ``$YOLLAVA_HOME/server``."""
    return data_home() / "server"
