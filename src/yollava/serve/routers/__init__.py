"""The HTTP API as FastAPI routers, one per resource; ``create_app`` includes them in this order."""

from . import chat, concepts, images, jobs, meta, recognize

ROUTERS = [meta.router, chat.router, images.router, recognize.router, concepts.router, jobs.router]

__all__ = ["ROUTERS"]
