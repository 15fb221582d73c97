"""The HTTP server: OpenAI-compatible chat, concept training jobs, recognition, users, a web page.

``create_app(config, engine=None)`` builds the FastAPI app; ``engine`` (a loaded :class:`Engine`) lets
tests and benchmarks share an already loaded model, otherwise ``config.model`` is loaded. The
endpoints live in :mod:`yollava.serve.routers` (one router per resource); what a server process holds
is :class:`~yollava.serve.server.Server`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from ..engine import Engine
from .config import ServerConfig
from .errors import install_error_handlers
from .routers import ROUTERS
from .routers.common import concept_view, unreadable_view
from .server import BodyLimit, SecurityHeaders, Server

__all__ = ["BodyLimit", "SecurityHeaders", "Server", "concept_view", "create_app", "unreadable_view"]


def create_app(config: ServerConfig | None = None, engine: Engine | None = None) -> FastAPI:
    config = config or ServerConfig()
    server = Server(config, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.jobs.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server.jobs.stop)

    docs = ("/docs", "/docs/oauth2-redirect") if config.docs else ()  # the API documentation is opt-in
    app = FastAPI(title="yollava", version="1", lifespan=lifespan, docs_url="/docs" if config.docs else None,
                  openapi_url="/openapi.json" if config.docs else None, redoc_url=None)
    app.state.server = server
    install_error_handlers(app, server.redact)
    app.add_middleware(BodyLimit, limit=config.limits.max_request_bytes)
    app.add_middleware(SecurityHeaders, docs_paths=docs)  # outermost: also on BodyLimit's own 413
    for router in ROUTERS:
        app.include_router(router)
    return app
