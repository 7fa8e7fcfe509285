"""``/auth/keys``: an admin issues, lists and revokes keys over HTTP.

``herder keys issue|ls|revoke`` work on the manager's database directly (the first admin
key has to come from somewhere before anything runs); a running fleet's admin, or the
dashboard, does the same here. A key is shown once, in the answer that issues it: the
manager keeps only its id. A revocation takes effect at once on this manager (its
honoured keys are read again in the same request), and within a second on others
sharing the database, as with the CLI.

Admins only: a user's key neither sees nor touches keys, even their own (a user who
could mint keys for themselves could outlive a revocation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from herder.apierrors import ApiError, read_json
from herder.manager.models import KeyRequest
from herder.manager.store.tables import AuthKey
from herder.openapi_docs import path_param
from herder.principals import principal_of

if TYPE_CHECKING:
    from herder.manager.authority import Authority
    from herder.manager.server import ManagerRuntime

BODY_ERRORS = (400, 408, 413, 422)
_KEY_ID = path_param("id", "The key's id, as 'id' in the key documents.", {"type": "string", "maxLength": 64})
_ADMINS_ONLY = (403, "Not an admin's key: keys are an admin's business.")
_AUTH_OFF = (404, "Auth is off: the manager issues no keys.")


def key_document(key: AuthKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "user": key.subject,
        "role": key.role,
        "issued_at": key.issued_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def key_routes(app: FastAPI, runtime: ManagerRuntime, docs: Any) -> None:
    """``GET /auth/keys``, ``POST /auth/keys``, ``POST /auth/keys/{id}/revoke``."""

    def authority(request: Request) -> Authority:
        if runtime.authority is None:
            raise ApiError(404, "not_found", "auth is off: this manager issues no keys", "path")
        _, role = principal_of(request.scope)
        if role != "admin":
            raise ApiError(403, "forbidden", "only an admin's key may see or change keys", "Authorization")
        return runtime.authority

    @app.get(
        "/auth/keys",
        openapi_extra=docs.operation("KeyList", _ADMINS_ONLY, _AUTH_OFF),
        summary="Every key issued, oldest first (never the keys themselves); admins only",
    )
    async def list_keys(request: Request) -> Response:
        found = authority(request)
        async with runtime.sessions() as db:
            keys = await found.list_keys(db)
        return JSONResponse({"keys": [key_document(k) for k in keys]})

    @app.post(
        "/auth/keys",
        status_code=201,
        openapi_extra=docs.operation(
            "IssuedKeyDocument",
            *BODY_ERRORS,
            _ADMINS_ONLY,
            _AUTH_OFF,
            status=201,
            body=KeyRequest,
            headers={"Location": "Where the key's revocation is posted (POST .../revoke)."},
        ),
        summary="Issue a key for a user; the answer is the only place it is shown; admins only",
    )
    async def issue_key(request: Request) -> Response:
        found = authority(request)
        req = await read_json(request, KeyRequest)
        async with runtime.sessions() as db, db.begin():
            issued = await found.issue_key(db, req.user, req.role, req.ttl_s)
            record = await db.get(AuthKey, issued.id)
        assert record is not None  # written in this very transaction
        doc = {**key_document(record), "key": issued.key}
        host = request.headers.get("host", "")
        location = f"{request.url.scheme}://{host}/auth/keys/{issued.id}/revoke"
        return JSONResponse(doc, status_code=201, headers={"Location": location})

    @app.post(
        "/auth/keys/{id}/revoke",
        openapi_extra=docs.operation(
            "KeyDocument",
            _ADMINS_ONLY,
            (404, "No key with this id, or auth is off."),
            (409, "The key was revoked already."),
            params=[_KEY_ID],
        ),
        summary="Revoke a key: its tokens stop working at once here; admins only",
    )
    async def revoke_key(request: Request) -> Response:
        found = authority(request)
        key_id = request.path_params["id"]
        async with runtime.sessions() as db, db.begin():
            record = await db.get(AuthKey, key_id)
            if record is None:
                raise ApiError(404, "not_found", f"no key with id {key_id!r}", "id")
            if record.revoked_at is not None:
                raise ApiError(409, "conflict", f"key {key_id!r} was revoked already", "id")
            await found.revoke(db, key_id=key_id)
            await db.flush()
            await found.note_revocations(db, runtime.config.data_dir)
            await db.refresh(record)
            doc = key_document(record)
        async with runtime.sessions() as db:
            await found.refresh(db)  # honoured no more, here, from this moment
        return JSONResponse(doc)
