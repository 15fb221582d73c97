"""JSON request bodies: bounded nesting and size, finite numbers and valid Unicode before any model sees them.

Every body is checked and parsed in a worker thread, never on the event loop; the checks run in linear time
(:func:`yollava.safejson.json_shape`), so one hostile body cannot hold up other requests.
"""

from __future__ import annotations

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..safejson import UnsafeJSONError, loads
from .errors import APIError


def parse_body(body: bytes, max_depth: int, max_values: int | None = None):
    try:
        data = loads(body, max_depth=max_depth, what="request body", max_values=max_values)
    except UnsafeJSONError as e:
        raise APIError(400, str(e)) from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


def _validated(body: bytes, model: type[BaseModel], max_depth: int, max_values: int | None):
    data = parse_body(body, max_depth, max_values)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        parts, param = [], None
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ())) or "body"
            param = param or where
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        raise APIError(422, "invalid request: " + "; ".join(parts), param=param) from None


async def read_json(request: Request, model: type[BaseModel], max_depth: int = 32, max_values: int | None = None):
    """The body as ``model``: 400 if it is not safe JSON, 422 if it does not fit the model (in a worker thread)."""
    body = await request.body()
    return await anyio.to_thread.run_sync(_validated, body, model, max_depth, max_values)
