"""Every error leaves the server as ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..concepts import validate_name
from ..errors import (
    CannotGenerateImagesError,
    ConceptMismatchError,
    ConceptNotReadyError,
    CorruptConceptError,
    InvalidConceptNameError,
    InvalidImageError,
    NotEnoughPhotosError,
    UnknownConceptError,
    YollavaError,
)

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_busy",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str | None = None, param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "api_error")
        self.param = param
        self.code = code
        self.headers = headers


def error_body(status: int, message: str, type: str | None = None, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type or _TYPES.get(status, "api_error"), "param": param, "code": code}}


def error_response(status: int, message: str, type: str | None = None, param: str | None = None, code: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, type, param, code), status_code=status, headers=headers)


def from_yollava(e: YollavaError, param: str | None = None) -> APIError:
    """Map the library's errors to HTTP statuses; messages are the library's (they say what to do)."""
    msg = str(e)
    if isinstance(e, UnknownConceptError):
        return APIError(404, msg, param=param, code="concept_not_found")
    if isinstance(e, ConceptNotReadyError):
        return APIError(409, msg, type="conflict_error", param=param, code="concept_not_ready")
    if isinstance(e, ConceptMismatchError):
        return APIError(409, msg, type="conflict_error", param=param, code="concept_model_mismatch")
    if isinstance(e, InvalidImageError):
        return APIError(422, msg, param=param, code="invalid_image")
    if isinstance(e, CannotGenerateImagesError):
        return APIError(422, msg, param=param, code="cannot_generate_images")
    if isinstance(e, (InvalidConceptNameError, NotEnoughPhotosError, CorruptConceptError)):
        return APIError(422, msg, param=param)
    return APIError(422, msg, param=param)


def checked_name(name: str, param: str = "name") -> str:
    """``name`` if it is a valid concept name (matched in full: no trailing newline), else 422."""
    try:
        return validate_name(name)
    except InvalidConceptNameError as e:
        raise APIError(422, str(e), param=param) from None


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str | None]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next((e.get("ctx", {}) for e in errors if e.get("type") == "json_invalid"), {})
        return 400, f"request body is not valid JSON ({ctx.get('error', 'parse error')})", None
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or where
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return 422, "invalid request: " + "; ".join(parts), param


def install_error_handlers(app: FastAPI, redact=None) -> None:
    """JSON errors for every failure; ``redact`` (a :class:`~yollava.serve.redact.Redactor`) cleans messages."""
    redact = redact or (lambda text: text)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, redact(exc.message), exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(YollavaError)
    async def _yollava_error(request: Request, exc: YollavaError):
        e = from_yollava(exc)
        return error_response(e.status, redact(e.message), e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        status, message, param = _validation_message(exc)
        return error_response(status, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, redact(message), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: say so, keep the JSON shape
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error ({exc.__class__.__name__})", type="api_error")
