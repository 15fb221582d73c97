"""The web page, health check, the model list and the caller's limits."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from ..db import User
from ..server import Server
from .common import current_user, get_server

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index():
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/healthz")
async def healthz(server: Server = Depends(get_server)):
    return {"status": "ok", "model": server.model_name}


@router.get("/v1/models")
async def models(user: User = Depends(current_user), server: Server = Depends(get_server)):
    return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0, "owned_by": "yollava"}]}


@router.get("/v1/me")
async def me(user: User = Depends(current_user), server: Server = Depends(get_server)):
    return {"object": "user", "name": user.name, "model": server.model_name, "limits": {
        "max_photos": server.limits.max_photos, "max_photo_bytes": server.limits.max_photo_bytes, "max_pixels": server.limits.max_pixels,
        "max_tokens": server.limits.max_tokens_limit, "max_prompt_tokens": server.limits.max_prompt_tokens, "max_k": server.limits.max_k,
        "max_concepts": server.limits.max_concepts_per_user, "max_storage_bytes": server.limits.max_storage_bytes_per_user}}
