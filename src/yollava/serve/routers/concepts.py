"""``/v1/concepts``: create (a training job), list, read, delete, export and import concepts."""

from __future__ import annotations

import io
import zipfile

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from ...concepts import list_concepts, read_meta
from ...errors import CorruptConceptError, UnknownConceptError
from ..db import ACTIVE, User
from ..errors import APIError, checked_name
from ..imports import import_concept
from ..photos import FORMATS
from ..quotas import check_quotas, writing_for
from ..server import Server
from .common import concept_view, current_user, get_server, read_form, read_upload, truthy, unreadable_view

router = APIRouter()


@router.post("/v1/concepts", status_code=202)
async def create_concept(request: Request, user: User = Depends(current_user), server: Server = Depends(get_server)):
    form = await read_form(request, max_files=server.limits.max_photos + 8)
    name = form.get("name")
    if not isinstance(name, str) or not name.strip():
        raise APIError(422, "give the concept a name (form field 'name', e.g. bo)", param="name")
    name = checked_name(name.strip(" "))  # spaces around a typed name are dropped; "bo\n" is refused
    if name in server.host.reserved_tokens or f"<{name}>" in server.host.reserved_tokens:
        raise APIError(422, f"concept name {name!r} clashes with a special token of the model", param="name")
    category = form.get("category") or server.config.data.category
    if category not in ("object", "person"):
        raise APIError(422, "category must be 'object' or 'person'", param="category")
    overwrite = truthy(form.get("overwrite", "false"))
    files = [f for key in ("photos", "photos[]", "photo", "files") for f in form.getlist(key) if isinstance(f, UploadFile)]
    if not files:
        raise APIError(422, "upload 1 or more photos of the subject (form field 'photos'; 3-10 work best)", param="photos")
    if len(files) > server.limits.max_photos:
        raise APIError(413, f"at most {server.limits.max_photos} photos per concept ({len(files)} sent)", param="photos")
    space = server.space(user)

    def check(incoming: int) -> None:
        if space.has_concept(name) and not overwrite:
            raise APIError(409, f"you already have a concept <{name}> (delete it first, or send overwrite=true)", param="name", code="concept_exists")
        if server.jobs.active_job(user.id, name):
            raise APIError(409, f"<{name}> is already being trained", param="name", code="job_exists")
        if len(server.db.list_jobs(user.id, ACTIVE)) >= server.limits.max_jobs_per_user:
            raise APIError(429, f"you have {server.limits.max_jobs_per_user} training jobs queued or running; wait for one to finish", code="too_many_jobs")
        check_quotas(server, user.id, space, name, incoming)

    await anyio.to_thread.run_sync(check, sum(f.size or 0 for f in files))  # before reading the photos: cheap to report
    photos = []
    for i, f in enumerate(files):
        label = f"photo {i + 1} ({f.filename or 'unnamed'})"
        blob = await read_upload(f, server.limits.max_photo_bytes, label)
        _, fmt = await anyio.to_thread.run_sync(lambda b=blob, lab=label: server.photos.open(b, label=lab, param="photos"))
        photos.append((blob, FORMATS[fmt]))

    def submit() -> dict:
        with server.user_lock(user.id), server.jobs.concept_lock(user.id, name):  # checked again: two uploads may race
            check(sum(len(b) for b, _ in photos))
            with writing_for(server, user.id, space):
                return server.jobs.submit(user, name, photos, category, overwrite)

    job = await anyio.to_thread.run_sync(submit)
    return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get("/v1/concepts")
async def concepts_list(user: User = Depends(current_user), server: Server = Depends(get_server)):
    space = server.space(user)

    def views() -> list[dict]:  # a bad file is listed as unreadable (so it can be deleted), never a 500
        return [unreadable_view(m["name"], server.redact(m["error"])) if "error" in m else concept_view(m, space.concepts / f"{m['name']}.json")
                for m in list_concepts(space.concepts)]

    data = await anyio.to_thread.run_sync(views)
    ready = {d["name"] for d in data}
    for job in server.db.list_jobs(user.id, ACTIVE):
        if job["concept"] not in ready:
            view = server.jobs.view(job)
            data.append({"object": "concept", "name": job["concept"], "identifier": f"<{job['concept']}>", "status": "training",
                         "job": job["id"], "phase": view["phase"], "progress": view["progress"],
                         "recognition_ready": view["recognition_ready"], "conversation_ready": False})
    return {"object": "list", "data": data}


@router.get("/v1/concepts/{name}")
async def concept_get(name: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    name = checked_name(name)
    space = server.space(user)
    try:
        meta = read_meta(space.concepts, name)
    except CorruptConceptError as e:
        return unreadable_view(name, server.redact(str(e)))
    except UnknownConceptError:
        job = server.jobs.active_job(user.id, name)
        if job:
            view = server.jobs.view(job)
            return {"object": "concept", "name": name, "identifier": f"<{name}>", "status": "training", "job": job["id"],
                    "phase": view["phase"], "progress": view["progress"], "recognition_ready": view["recognition_ready"],
                    "conversation_ready": False}
        raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found") from None
    return concept_view(meta, space.concepts / f"{name}.json")


@router.delete("/v1/concepts/{name}")
async def concept_delete(name: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    name = checked_name(name)
    space = server.space(user)

    def run() -> bool:
        server.jobs.cancel_concept(user.id, name, wait=120)
        with server.jobs.concept_lock(user.id, name):
            found = space.remove_concept_files(name)
            jobs = server.db.list_jobs(user.id, concept=name)
            for job in jobs:
                space.remove_job_dir(job["id"])
            server.db.delete_jobs(user.id, name)
            server.db.checkpoint()
            server.host.concepts.forget(space.concepts, name)
        return found or bool(jobs)

    if not await anyio.to_thread.run_sync(run):
        raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found")
    return {"object": "concept.deleted", "name": name, "deleted": True}


@router.get("/v1/concepts/{name}/export")
async def concept_export(name: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    name = checked_name(name)
    space = server.space(user)

    def run() -> bytes:
        with server.jobs.concept_lock(user.id, name):
            if not space.has_concept(name):
                raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for suffix in (".safetensors", ".json"):
                    zf.write(space.concepts / f"{name}{suffix}", f"{name}{suffix}")
            return buf.getvalue()

    blob = await anyio.to_thread.run_sync(run)
    return Response(blob, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})


@router.post("/v1/concepts/import", status_code=201)
async def concept_import(request: Request, user: User = Depends(current_user), server: Server = Depends(get_server)):
    form = await read_form(request, max_files=2)
    f = form.get("file")
    if not isinstance(f, UploadFile):
        raise APIError(422, "upload the concept as a zip in the form field 'file' (as GET /v1/concepts/NAME/export makes it)", param="file")
    blob = await read_upload(f, server.limits.max_import_bytes, "the concept zip")
    rename = form.get("name")
    overwrite = truthy(form.get("overwrite", "false"))
    space = server.space(user)

    def run() -> dict:
        name = rename.strip(" ") if isinstance(rename, str) and rename.strip() else None
        return import_concept(server, user, space, blob, name, overwrite, concept_view)

    view = await anyio.to_thread.run_sync(run)
    return JSONResponse(view, status_code=201)
