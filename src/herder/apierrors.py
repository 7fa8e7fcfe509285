"""What every herder HTTP API shares: one error document, JSON bodies read the same way.

The agent and the manager answer every error as ``{"error": code, "message": ...,
"field": ...}``, where ``field`` names what to fix. Both read bodies as JSON whatever
their content type says (the seeds' clients send none). This module holds those rules
once; it imports neither the agent nor the manager, which must not import each other.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from herder.frontdoor import DEFAULT_MAX_JSON_DEPTH, JSON_DEPTH_KEY, too_deep

M = TypeVar("M", bound=BaseModel)


class FieldError(ValueError):
    """A check that spans fields but blames one: the 422 names ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ApiError(Exception):
    """An error answered as the one error document."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    document = {"error": code, "message": message, "field": field}
    return JSONResponse(document, status_code=status, headers=headers)


def allowed_methods(app: Any, scope: Any) -> str:
    """The ``Allow`` header of a 405: every method some route at this path accepts.

    Starlette names only the first route whose path matches, but ``GET /tasks`` and
    ``POST /tasks`` are two routes: a client told ``Allow: GET, HEAD`` would never try POST.
    """
    methods: set[str] = set()
    path = scope.get("path", "")
    for route in _routes(getattr(app, "routes", ())):
        regex, accepted = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and accepted and regex.match(path):
            methods.update(accepted)
    return ", ".join(sorted(methods))


def _routes(routes: Any) -> Any:
    """Every route, those of included routers too: FastAPI keeps an ``include_router``'s
    routes in it (the agent's ``POST /pools`` was missing from ``GET /pools``'s 405)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


def _field_of(error: Any) -> str | None:
    """The field an error blames: its location, or the field a FieldError names."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return cause.field
    loc = [str(p) for p in error.get("loc", ())]
    # FastAPI puts where the value came from first; a field may be named "path" too
    # (a health check's), so only the first item is dropped.
    if loc and loc[0] in ("body", "path", "query", "header"):
        loc = loc[1:]
    return ".".join(loc) or None


def validation_error(exc: ValidationError | RequestValidationError) -> JSONResponse:
    """422 naming the first wrong field, with every problem listed in the message."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    field = _field_of(first)
    details = "; ".join(f"{_field_of(e) or 'body'}: {e.get('msg', 'invalid')}" for e in errors)
    return error_response(422, "invalid", details, field)


async def read_json(request: Request, model: type[M]) -> M:
    """Parse the body as JSON (any content type) and validate it as ``model``.

    Raises:
        ApiError: 400 when the body is not JSON or nests deeper than the front door's
            ``max_json_depth``; 422 (via ValidationError) when it does
            not match the model.
    """
    body = await request.body()
    depth = request.scope.get(JSON_DEPTH_KEY, DEFAULT_MAX_JSON_DEPTH)
    if too_deep(body, depth):
        message = f"the body nests arrays and objects more than {depth} deep"
        raise ApiError(400, "invalid_json", message, "body")
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", "body") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "the body must be a JSON object", "body")
    if _SURROGATE_ESCAPE.search(body):
        where = lone_surrogate_at(data)
        if where is not None:
            message = "a string holds a lone surrogate (\\ud800-\\udfff unpaired): it is not UTF-8 text"
            raise ApiError(422, "invalid", f"{where or 'body'}: {message}", where or "body")
    return model.model_validate(data)


# A surrogate can only come from a \u escape (the body is UTF-8): only then is the walk paid.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def lone_surrogate_at(data: Any, path: str = "") -> str | None:
    """The dotted path of the first string (value or key) that cannot be written as UTF-8.

    Why: Python's JSON parser takes ``"\\ud800"`` as a one-character string, but no
    file, record, argv or answer can hold it; found late, it failed a create after the
    process was registered (a 500, and a process that could be neither shown nor deleted).
    A key's own path is its container's.
    """
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            if lone_surrogate_at(key) is not None:
                return path
            found = lone_surrogate_at(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found = lone_surrogate_at(value, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def install_error_handlers(app: FastAPI, own: dict[type[Exception], tuple[int, str, str | None]]) -> None:
    """Every error, ours or the framework's, answers the one error document.

    ``own`` maps an app's own exception types to (status, code, field), e.g. the agent's
    ``NotFound`` to ``(404, "not_found", "slug")``.
    """

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, str(exc), exc.field)

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError | RequestValidationError)
        return validation_error(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.app, request.scope) or headers.get("Allow", "")
        return error_response(exc.status_code, code, str(exc.detail), headers=headers or None)

    def answer(status: int, code: str, field: str | None) -> Any:
        async def handler(_: Request, exc: Exception) -> Response:
            return error_response(status, code, str(exc), field)

        return handler

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for exc_type, (status, code, field) in own.items():
        app.add_exception_handler(exc_type, answer(status, code, field))
