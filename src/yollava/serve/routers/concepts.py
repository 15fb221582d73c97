"""``/v1/concepts``: create (a training job), list, read, delete, export and import concepts."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from ...concepts import list_concepts, read_meta
from ...errors import CorruptConceptError, UnknownConceptError
from ..db import ACTIVE, User
from ..errors import APIError, checked_name
from ..imports import export_concept, import_concept
from ..photos import FORMATS
from ..quotas import check_quotas, writing_for
from ..server import Server
from ..thumbnails import concept_thumbnails, job_thumbnails, make_thumbnail
from .common import concept_view, current_user, get_server, read_form, read_upload, truthy, unreadable_view

router = APIRouter()


@router.post("/v1/concepts", status_code=202)
async def create_concept(request: Request, user: User = Depends(current_user), server: Server = Depends(get_server)):
    form = await read_form(request, max_files=server.limits.max_photos + 8)
    name = form.get("name")
    if not isinstance(name, str) or not name.strip():
        raise APIError(422, "give the concept a name (form field 'name', e.g. bo)", param="name", code="name_required")
    name = checked_name(name.strip(" "))  # spaces around a typed name are dropped; "bo\n" is refused
    if _reserved(server, name):
        raise APIError(422, f"the concept name <{name}> clashes with a special token of the model", param="name", code="reserved_name")
    category = form.get("category") or server.config.data.category
    if category not in ("object", "person"):
        raise APIError(422, "category must be 'object' or 'person'", param="category", code="invalid_category")
    overwrite = truthy(form.get("overwrite", "false"))
    files = [f for key in ("photos", "photos[]", "photo", "files") for f in form.getlist(key) if isinstance(f, UploadFile)]
    least = server.limits.min_photos
    if not files:
        raise APIError(422, f"upload {least} or more photos of the subject (form field 'photos'; 3-10 work best)", param="photos", code="too_few_photos")
    if len(files) > server.limits.max_photos:
        raise APIError(413, f"at most {server.limits.max_photos} photos per concept ({len(files)} sent)", param="photos", code="too_many_photos")
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
    started = time.monotonic()
    photos, thumbnails = [], []
    for i, f in enumerate(files):
        label = f"photo {i + 1} ({f.filename or 'unnamed'})"
        blob = await read_upload(f, server.limits.max_photo_bytes, label)

        def opened(b=blob, lab=label, param=f"photos[{i}]"):
            image, fmt = server.photos.open(b, label=lab, param=param)
            return make_thumbnail(image), fmt

        thumb, fmt = await anyio.to_thread.run_sync(opened)
        photos.append((blob, FORMATS[fmt]))
        thumbnails.append(thumb)
    checked_in = time.monotonic() - started

    def submit() -> dict:
        with server.user_lock(user.id), server.jobs.concept_lock(user.id, name):  # checked again: two uploads may race
            check(sum(len(b) for b, _ in photos) + sum(len(t) for t in thumbnails))
            with writing_for(server, user.id, space):
                if len(photos) < least:  # the last check, so a removed user still hears 401 first
                    raise APIError(422, f"upload at least {least} photos of the subject ({len(photos)} sent; 3-10 work best)",
                                   param="photos", code="too_few_photos")
                return server.jobs.submit(user, name, photos, category, overwrite, thumbnails, checked_in)

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
            concept_thumbnails(space, name).remove()
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
            return export_concept(server, space, name)  # 404 unknown, 422 damaged; no server path in it

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
        view = import_concept(server, user, space, blob, name, overwrite, concept_view)
        with server.jobs.concept_lock(user.id, view["name"]):
            concept_thumbnails(space, view["name"]).remove()  # the photos of a concept it replaced
        return view

    view = await anyio.to_thread.run_sync(run)
    return JSONResponse(view, status_code=201)


def _reserved(server: Server, name: str) -> bool:
    return name in server.host.reserved_tokens or f"<{name}>" in server.host.reserved_tokens


@router.get("/v1/concepts/{name}/thumbnails")
async def concept_thumbnails_get(name: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    """Small JPEGs of the concept's training photos as data URLs (none for an imported concept)."""
    name = checked_name(name)
    space = server.space(user)

    def run() -> list[str]:
        if space.has_concept(name):
            return concept_thumbnails(space, name).data_urls()
        job = server.jobs.active_job(user.id, name)
        if job is None:
            raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found")
        return job_thumbnails(space, job["id"]).data_urls()

    urls = await anyio.to_thread.run_sync(run)
    return {"object": "list", "name": name, "data": urls}


@router.get("/v1/concepts/{name}/available")
async def concept_name_available(name: str, user: User = Depends(current_user), server: Server = Depends(get_server)):
    """Whether a new concept could take ``name`` now (checked as a person types it): ``code`` says why not."""
    try:
        name = checked_name(name)
    except APIError as e:
        return {"object": "concept_name", "name": name, "available": False, "code": "invalid_name", "message": e.message}
    space = server.space(user)
    code = message = None
    if _reserved(server, name):
        code, message = "reserved_name", f"the concept name <{name}> clashes with a special token of the model"
    elif server.jobs.active_job(user.id, name):
        code, message = "job_exists", f"<{name}> is being trained right now"
    elif space.has_concept(name):
        code, message = "concept_exists", f"you already have a concept <{name}> (training again replaces it)"
    return {"object": "concept_name", "name": name, "available": code is None, "code": code, "message": message}
