"""JSON in and out for the admin and user APIs: typed request bodies, compact responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from potluck.hub.errors import InvalidRequestError
from potluck.hub.keys import ApiKey

T = TypeVar("T")


async def body_as(request: web.Request, kind: type[T], *, param: str | None = None) -> T:
    """The request body decoded as ``kind``; 400 invalid_request_error naming the bad field otherwise.

    ``param`` is named when the error cannot say which field is wrong (e.g. the body is not JSON).
    """
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid body: {exc}", param=_field_of(str(exc)) or param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Body is not JSON: {exc}", param=param) from None


def _field_of(message: str) -> str | None:
    """The field a msgspec validation message is about (``... - at `$.name` `` or ``missing ... `name` ``)."""
    if "$." in message:
        return message.rsplit("$.", 1)[-1].rstrip("`").split(".")[0].split("[")[0]
    if "missing required field" in message:
        return message.rsplit("`", 2)[-2] if message.count("`") >= 2 else None
    return None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_view(key: ApiKey) -> dict[str, Any]:
    """An API key as listings show it: never the secret, only its display prefix."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": iso(key.created_at),
        "revoked_at": iso(key.revoked_at),
    }
