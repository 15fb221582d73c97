"""Exporting a concept as a zip (``GET /v1/concepts/NAME/export``), and importing one, trusting nothing in it.

An export holds the two files of the concept, checked as an import would check them (a damaged concept is a
422, not a broken zip), its metadata without any path of the server's disk: the base model is named and
fingerprinted, never located.

The zip's directory is checked before it is parsed (at most 8 entries, a small directory), each member
is inflated through a stream that stops at its byte limit (a header that lies about the size cannot
make the server inflate more), and the whole concept (metadata schema, base model, tensor hash,
shapes, dtypes, finite values, k) is checked in memory. Only then, with the quotas checked and the
user still present, are the two files written, each atomically.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib

from ..concepts import concept_from_bytes, parse_meta, read_meta, save_concept, validate_name
from ..concepts.io import damaged_message
from ..errors import CorruptConceptError, InvalidConceptNameError, UnknownConceptError, YollavaError
from .errors import APIError, checked_name, from_yollava
from .quotas import check_quotas, writing_for
from .redact import without_paths

_EOCD = b"PK\x05\x06"
_MAX_ENTRIES = 8
_MAX_DIRECTORY_BYTES = 64 * 1024
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, ValueError, EOFError, NotImplementedError, KeyError)


def _bad(message: str, status: int = 422) -> APIError:
    return APIError(status, message, param="file", code="invalid_concept_zip" if status == 422 else "file_too_large")


def _check_directory(blob: bytes) -> None:
    """Refuse zips with many entries or a big central directory before ``zipfile`` builds an object per entry."""
    end = blob.rfind(_EOCD, max(0, len(blob) - 65_557))
    if end < 0 or len(blob) < end + 22:
        raise _bad("the upload is not a zip file (export a concept with GET /v1/concepts/NAME/export)")
    entries = int.from_bytes(blob[end + 10 : end + 12], "little")
    directory = int.from_bytes(blob[end + 12 : end + 16], "little")
    if entries > _MAX_ENTRIES or directory > _MAX_DIRECTORY_BYTES:
        raise _bad("the zip must hold exactly one NAME.json and one NAME.safetensors (as export makes it)")


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """The member's bytes, inflating at most ``limit + 1`` of them whatever its header claims."""
    if info.file_size > limit:
        raise _bad(f"{info.filename} is larger than {limit:,} bytes", 413)
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)  # read(n) inflates in bounded steps; read() would inflate it all at once
    except _ZIP_ERRORS as e:
        raise _bad(f"the zip is damaged ({e.__class__.__name__}: {e})") from None
    if len(data) > limit:
        raise _bad(f"{info.filename} is larger than {limit:,} bytes", 413)
    return data


def read_concept_zip(blob: bytes, max_meta_bytes: int, max_tensor_bytes: int) -> tuple[str, bytes, bytes]:
    """(the JSON member's file stem, metadata bytes, tensor bytes) of a concept zip, or 413/422."""
    _check_directory(blob)
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except _ZIP_ERRORS:
        raise _bad("the upload is not a zip file (export a concept with GET /v1/concepts/NAME/export)") from None
    with zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        jsons = [i for i in members if i.filename.endswith(".json")]
        tensors = [i for i in members if i.filename.endswith(".safetensors")]
        if len(members) > _MAX_ENTRIES or len(jsons) != 1 or len(tensors) != 1:
            raise _bad("the zip must hold exactly one NAME.json and one NAME.safetensors (as export makes it)")
        meta = read_member(zf, jsons[0], max_meta_bytes)
        rows = read_member(zf, tensors[0], max_tensor_bytes)
    return jsons[0].filename.rsplit("/", 1)[-1][: -len(".json")], meta, rows


def import_concept(server, user, space, blob: bytes, rename: str | None, overwrite: bool, view) -> dict:
    """Check everything, then save the concept for ``user``; ``view(meta, path)`` makes the response."""
    limits, fingerprint = server.limits, server.host.fingerprint
    stem, meta_bytes, tensor_bytes = read_concept_zip(blob, min(limits.max_meta_bytes, 1024 * 1024), limits.max_import_bytes)
    if rename is not None:
        rename = checked_name(rename, "name")
    label = rename or (stem if _valid(stem) else "imported")
    try:
        meta = parse_meta(meta_bytes, label, limits.max_meta_bytes)
    except YollavaError as e:
        raise from_yollava(e, param="file") from None
    name = rename or checked_name(meta["name"] if isinstance(meta.get("name"), str) else stem, "file")
    if name in server.host.reserved_tokens or f"<{name}>" in server.host.reserved_tokens:
        raise APIError(422, f"concept name {name!r} clashes with a special token of the model", param="name")
    try:
        concept = concept_from_bytes(name, meta, tensor_bytes, fingerprint, max_k=limits.max_k)
    except YollavaError as e:
        raise from_yollava(e, param="file") from None
    with server.user_lock(user.id), server.jobs.concept_lock(user.id, name):
        if server.jobs.active_job(user.id, name):
            raise APIError(409, f"<{name}> is being trained right now; import it under another name", param="name", code="job_exists")
        exists = space.has_concept(name)
        if exists and not overwrite:
            raise APIError(409, f"you already have a concept <{name}> (send overwrite=true, or name=OTHER)", param="name", code="concept_exists")
        replaced = sum(p.stat().st_size for p in space.concept_files(name) if p.is_file()) if exists else 0
        check_quotas(server, user.id, space, name, len(meta_bytes) + len(tensor_bytes), replaced)
        with writing_for(server, user.id, space):
            save_concept(concept, space.concepts, fingerprint)
        server.host.concepts.forget(space.concepts, name)
        return view(read_meta(space.concepts, name), space.concepts / f"{name}.json")


def export_concept(server, space, name: str) -> bytes:
    """The zip of the user's concept ``name`` (call with its concept lock held): 404 if there is none, 422 if
    its files are damaged (the rows missing, or failing the checks an import makes)."""
    folder = space.concepts
    try:
        meta = read_meta(folder, name)
        try:
            rows = (folder / f"{name}.safetensors").read_bytes()
        except FileNotFoundError:
            raise CorruptConceptError(damaged_message(name)) from None
        concept_from_bytes(name, meta, rows)  # every check an import makes (the base model aside: it may have changed)
    except UnknownConceptError:
        raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found") from None
    except YollavaError as e:
        raise APIError(422, f"{e} (it cannot be exported)", param="name", code="concept_damaged") from None
    public = without_paths(meta, server.redact)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.safetensors", rows)
        zf.writestr(f"{name}.json", json.dumps(public, indent=2, sort_keys=True))
    return buf.getvalue()


def _valid(name: str) -> bool:
    try:
        validate_name(name)
        return True
    except InvalidConceptNameError:
        return False

