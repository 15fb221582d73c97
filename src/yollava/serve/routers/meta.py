"""The web page, health check, the model list and the caller's limits."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from ..db import User
from ..errors import APIError
from ..server import Server
from .common import current_user, get_server

STATIC = Path(__file__).parent.parent / "static"
#: the page's own files (no build step, nothing fetched from elsewhere): name -> media type
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index():
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    if name not in STATIC_FILES:
        raise APIError(404, f"no such file: /static/{name[:64]}", code="not_found")
    return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@router.get("/healthz")
async def healthz(server: Server = Depends(get_server)):
    return {"status": "ok", "model": server.model_name}


@router.get("/v1/models")
async def models(user: User = Depends(current_user), server: Server = Depends(get_server)):
    return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0, "owned_by": "yollava"}]}


@router.get("/v1/me")
async def me(user: User = Depends(current_user), server: Server = Depends(get_server)):
    return {"object": "user", "name": user.name, "model": server.model_name, "limits": {
        "min_photos": server.limits.min_photos, "max_photos": server.limits.max_photos, "max_photo_bytes": server.limits.max_photo_bytes, "max_pixels": server.limits.max_pixels,
        "max_tokens": server.limits.max_tokens_limit, "max_prompt_tokens": server.limits.max_prompt_tokens, "max_k": server.limits.max_k,
        "max_concepts": server.limits.max_concepts_per_user, "max_storage_bytes": server.limits.max_storage_bytes_per_user}}
