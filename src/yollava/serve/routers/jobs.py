"""``/v1/jobs``: the caller's training jobs; read and cancel."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Query

from ..db import ACTIVE, User
from ..errors import APIError
from ..server import Server
from .common import current_user, get_server

router = APIRouter()


def _own_job(server: Server, user: User, job_id: str) -> dict:
    job = server.db.get_job(job_id) if len(job_id) < 64 else None
    if job is None or job["user_id"] != user.id:
        raise APIError(404, f"no training job {job_id[:64]}", param="id", code="job_not_found")
    return job


_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@router.get("/v1/jobs")
async def jobs_list(status: str | None = Query(None, description="active (queued or running), or a comma-separated list of statuses"),
                    user: User = Depends(current_user), server: Server = Depends(get_server)):
    wanted: list[str] = []
    for part in (status or "").split(","):
        part = part.strip()
        if part:
            wanted += list(ACTIVE) if part == "active" else [part]
    if any(s not in _STATUSES for s in wanted):
        raise APIError(422, f"status must be 'active' or among {', '.join(_STATUSES)}", param="status", code="invalid_status")
    return {"object": "list", "data": [server.jobs.view(j) for j in server.db.list_jobs(user.id, tuple(dict.fromkeys(wanted)) or None)]}


@router.get("/v1/jobs/{job_id}")
async def job_get(job_id: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    return server.jobs.view(_own_job(server, user, job_id))


@router.delete("/v1/jobs/{job_id}")
async def job_cancel(job_id: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    job = _own_job(server, user, job_id)
    if job["status"] in ACTIVE:
        await anyio.to_thread.run_sync(lambda: server.jobs.cancel(job_id, wait=120))
    return server.jobs.view(server.db.get_job(job_id) or job)
