"""What every router shares: the server and the calling user as dependencies, concept views, form uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from starlette.datastructures import UploadFile

from ..db import User
from ..errors import APIError
from ..redact import without_paths
from ..server import Server


def get_server(request: Request) -> Server:
    """The :class:`~yollava.serve.server.Server` of the app handling ``request``."""
    return request.app.state.server


async def current_user(request: Request) -> User:
    """The user whose API key the request carries (401 without a valid one)."""
    server = get_server(request)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' (an admin makes keys with `yollava users add NAME`)",
                       code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
    user = await anyio.to_thread.run_sync(server.db.authenticate, key.strip())
    if user is None:
        raise APIError(401, "invalid or revoked API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return user


def concepts_for(server: Server, user: User, names: list[str], param: str) -> list[str]:
    """``names`` if the user has a ready concept of each: 409 for one still training, 404 for one unknown."""
    space = server.space(user)
    for name in names:
        if not space.has_concept(name):
            job = server.jobs.active_job(user.id, name)
            if job is not None:
                raise APIError(409, f"concept <{name}> is still being trained (job {job['id']}, {job['status']})", param=param, code="concept_not_ready")
            raise APIError(404, f"unknown concept <{name}>: you have no concept of that name (GET /v1/concepts lists yours)", param=param, code="concept_not_found")
    return names


def concept_view(meta: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """The public form of a concept (``meta`` has passed the schema check of ``read_meta``)."""
    metrics = meta.get("metrics") or {}
    name = path.stem if path is not None else meta.get("name")
    return {
        "object": "concept",
        "name": name,
        "identifier": f"<{name}>",
        "status": "ready",
        "k": meta.get("k"),
        "recognition_threshold": meta.get("recognition_threshold", 0.5),
        "photos": len(meta.get("source_photos") or []),
        "best_epoch": metrics.get("best_epoch"),
        "holdout": metrics.get("holdout"),
        "recipe": without_paths(meta.get("recipe")),
        "created": path.stat().st_mtime if path is not None and path.exists() else None,
        "recognition_ready": True,
        "conversation_ready": True,
        "visual": bool(meta.get("visual")),  # has a prototype and concept head (made before: recognised by the LLM only)
    }


def unreadable_view(name: str, error: str) -> dict[str, Any]:
    """A concept file that fails its checks: listed (so it can be deleted), never loaded."""
    return {"object": "concept", "name": name, "identifier": f"<{name}>", "status": "unreadable", "error": error}


async def read_form(request: Request, max_files: int, max_fields: int = 16):
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise APIError(415, "send this request as multipart/form-data")
    try:
        return await request.form(max_files=max_files, max_fields=max_fields, max_part_size=64 * 1024)
    except APIError:
        raise
    except Exception as e:  # starlette's own multipart errors
        detail = getattr(e, "detail", None) or str(e)
        raise APIError(400, f"malformed multipart body ({detail})") from None


async def read_upload(f: UploadFile, limit: int, label: str) -> bytes:
    if f.size is not None and f.size > limit:
        raise APIError(413, f"{label} is larger than {limit:,} bytes", code="file_too_large")
    data = await f.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"{label} is larger than {limit:,} bytes", code="file_too_large")
    return data


def truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")
