"""``POST /auth/token/renew``: a fresh access token for the holder of a current one.

A dashboard tab keeps only its access token (the key that bought it is not kept), and a
token lives an hour (``token_ttl_s``). Without renewal a tab left open is signed out
when it expires. With it, the tab trades its token for a new one before then (at 80% of
its life), for the same user and role and the same key, never past the key's own expiry.

A revoked key's tokens are not renewed: the route reads the key's record in the
database at each renewal (not the once-a-second copy the front door checks), so a
revocation made by any manager or ``herder keys revoke`` holds at once. An expired
token is refused even inside the front door's clock-skew leeway, and a token bought with
no key (signed with the private key directly) has nothing to be checked against: 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from herder.apierrors import ApiError
from herder.manager.store.tables import AuthKey

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime

PATH = "/auth/token/renew"


def renewal_route(app: FastAPI, runtime: ManagerRuntime, docs: Any) -> None:
    """Add ``POST /auth/token/renew`` to the manager's app."""

    @app.post(
        PATH,
        openapi_extra=docs.operation(
            "AccessToken",
            (401, "No access token as bearer, or one expired, revoked, or bought with a revoked key."),
            (403, "The token was bought with no key: it cannot be renewed."),
            (404, "Auth is off: the manager issues no tokens."),
        ),
        summary="A fresh access token for the current one (same user, role and key); never a revoked key's",
    )
    async def renew(request: Request) -> Response:
        from herder.auth import TokenError
        from herder.manager.authority import NotRenewable

        authority = runtime.authority
        if authority is None:
            raise ApiError(404, "not_found", "auth is off: this manager issues no tokens", "path")
        scheme, _, held = request.headers.get("authorization", "").partition(" ")
        held = held.strip()
        if scheme.lower() != "bearer" or not held:  # the front door lets no such request in
            raise ApiError(
                401, "unauthorized", "send your token as 'Authorization: Bearer <token>'", "Authorization"
            )
        try:
            key_id = authority.verify_token(held).raw.get("key")
            async with runtime.sessions() as db:
                record = await db.get(AuthKey, key_id) if isinstance(key_id, str) else None
            fresh, expires_at = authority.renew(held, runtime.config.token_ttl_s, record)
        except TokenError as exc:
            raise ApiError(401, exc.reason, str(exc), "Authorization") from None
        except NotRenewable as exc:
            raise ApiError(403, "forbidden", str(exc), "Authorization") from None
        return JSONResponse({"token": fresh, "expires_at": expires_at})


__all__ = ["PATH", "renewal_route"]
