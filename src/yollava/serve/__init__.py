"""HTTP server: OpenAI-compatible chat with concepts, training jobs, recognition, users, a web page.

``create_app(ServerConfig(...))`` builds the FastAPI app (needs the ``serve`` extra); the commands live
in :mod:`yollava.cli.serve`.
"""

from .config import Limits, ServerConfig

__all__ = ["Limits", "ServerConfig", "create_app"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
