"""JSON in and out for the admin and user APIs: typed request bodies, compact responses."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar, overload

import msgspec
from aiohttp import web

from potluck.api.schemas.common import KeyInfo
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


def query_as(request: web.Request, kind: type[T]) -> T:
    """The query string decoded as ``kind`` (numbers from their text); 400 invalid_request_error naming the field."""
    try:
        return msgspec.convert(dict(request.query), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid query: {exc}", param=_field_of(str(exc))) from None


def _field_of(message: str) -> str | None:
    """The field a msgspec validation message is about (``... - at `$.name` `` or ``missing ... `name` ``)."""
    if "$." in message:
        return message.rsplit("$.", 1)[-1].rstrip("`").split(".")[0].split("[")[0]
    if "missing required field" in message:
        return message.rsplit("`", 2)[-2] if message.count("`") >= 2 else None
    return None


def json_response(data: msgspec.Struct, status: int = 200) -> web.Response:
    """A body typed in `potluck.api.schemas`, so that /openapi.json describes what is served."""
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


@overload
def iso(when: datetime) -> str: ...
@overload
def iso(when: datetime | None) -> str | None: ...
def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_view(key: ApiKey) -> KeyInfo:
    """An API key as listings show it: never the secret, only its display prefix."""
    return KeyInfo(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        created_at=iso(key.created_at),
        revoked_at=iso(key.revoked_at),
        last_used_at=iso(key.last_used_at),
    )
