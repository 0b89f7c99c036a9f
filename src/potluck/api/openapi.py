"""``GET /openapi.json``: the OpenAPI 3.1 document rendered from `potluck.api.operations.OPERATIONS`.

Schemas come from msgspec (``msgspec.json.schema_components``) over the very types the handlers decode
and answer with. Field descriptions are the docstrings written under each field, read from the source
once when the document is built (msgspec itself reads only class docstrings and ``Meta``). Every error
answer refers to the one ``ErrorEnvelope`` schema. docs/api.md is the prose.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi
from aiohttp import web

from potluck import __version__
from potluck.api.dialects import error_status
from potluck.api.operations import OPERATIONS, Answer, Auth, Operation, Schema
from potluck.protocol.anthropic_answer import ErrorEvent as AnthropicError
from potluck.protocol.errors import ERROR_CODES, ErrorEnvelope
from potluck.protocol.openai import Dialect

SCHEMA_REF = "#/components/schemas/{name}"
ERROR_SCHEMA = ErrorEnvelope.__name__
ANTHROPIC_ERROR_SCHEMA = AnthropicError.__name__


def _error_schema(dialect: Dialect) -> str:
    """Errors of Anthropic's Messages routes have Anthropic's shape; every other route has OpenAI's envelope."""
    return ANTHROPIC_ERROR_SCHEMA if dialect is Dialect.ANTHROPIC else ERROR_SCHEMA


OPENAPI_JSON = web.AppKey("potluck_openapi_json", bytes)

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    Auth.API_KEY: [{"apiKey": []}, {"apiKeyHeader": []}],
    Auth.ADMIN: [{"adminToken": []}],
    Auth.USER: [{"userToken": []}],
    Auth.NONE: [],
}

_SECURITY_SCHEMES: Schema = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`pk-…`) from POST /admin/keys"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The API key, another way"},
    "adminToken": {"type": "http", "scheme": "bearer", "description": "The hub's admin token, or an admin's token"},
    "userToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A session token from POST /api/login or a personal access token from POST /api/tokens",
    },
}

_HEADERS: Schema = {
    "RequestId": {
        "description": "The request's id, `req_<24 hex digits>`",
        "schema": {"type": "string", "pattern": "^req_[0-9a-f]{24}$"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying (1 to 60); on 503s made by the hub",
        "schema": {"type": "integer", "minimum": 1, "maximum": 60},
    },
}

_UPSTREAM = (
    "The backend's error status. Its body passes through when it is an OpenAI error object; anything else is "
    "wrapped as `upstream_error`"
)


# -- field descriptions from docstrings -------------------------------------------------------------------


def _structs(types: Iterable[Any]) -> Iterator[type[msgspec.Struct]]:
    """Every Struct class the types are made of."""
    pending: list[mi.Type] = list(mi.multi_type_info(list(types)))
    while pending:
        t = pending.pop()
        if isinstance(t, mi.StructType):
            yield t.cls
            pending.extend(f.type for f in t.fields)
        elif isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
            pending.append(t.item_type)
        elif isinstance(t, mi.DictType):
            pending += [t.key_type, t.value_type]
        elif isinstance(t, mi.TupleType):
            pending += t.item_types
        elif isinstance(t, mi.UnionType):
            pending += t.types
        elif isinstance(t, mi.Metadata):
            pending.append(t.type)


def _field_docstrings(module_name: str) -> dict[str, dict[str, str]]:
    """Class name -> {field: the docstring under it} for the classes of one module."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    except (OSError, TypeError):  # no source (frozen or bytecode-only install): no field descriptions
        return {}
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            docs = found[node.name] = {}
            for stmt, after in zip(node.body, node.body[1:], strict=False):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return found


def _describe(components: dict[str, Schema], structs: Iterable[type[msgspec.Struct]]) -> None:
    """Give each property of the Structs' components the docstring of its field (inherited ones too)."""
    modules: dict[str, dict[str, dict[str, str]]] = {}
    for cls in structs:
        schema = components.get(cls.__name__)
        if schema is None:
            continue
        docs: dict[str, str] = {}
        for base in reversed(cls.__mro__):
            if isinstance(base, type) and issubclass(base, msgspec.Struct) and base is not msgspec.Struct:
                if base.__module__ not in modules:
                    modules[base.__module__] = _field_docstrings(base.__module__)
                docs.update(modules[base.__module__].get(base.__name__, {}))
        properties = schema.get("properties", {})
        for name, encoded in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True):
            prop = properties.get(encoded)
            if prop is not None and "description" not in prop and name in docs:
                prop["description"] = docs[name]
        config = cls.__struct_config__
        tag = properties.get(config.tag_field) if config.tag_field else None
        if tag is not None and "description" not in tag:
            tag["description"] = f"Always `{config.tag}`: what this object is."


# -- the document ---------------------------------------------------------------------------------------


def _error_codes(op: Operation) -> list[str]:
    codes = list(op.errors)
    if op.auth is not Auth.NONE:
        codes.append("invalid_api_key")
    if op.body is not None:
        codes += ["invalid_request_error", "request_too_large"]
    if op.query is not None:
        codes.append("invalid_request_error")
    codes.append("internal_error")
    return list(dict.fromkeys(codes))


def _response(description: str, content: Schema, *, retry_after: bool = False, request_id: bool = True) -> Schema:
    response: Schema = {"description": description}
    headers = {"x-request-id": "RequestId"} if request_id else {}
    if retry_after:
        headers["Retry-After"] = "RetryAfter"
    if headers:
        response["headers"] = {name: {"$ref": f"#/components/headers/{ref}"} for name, ref in headers.items()}
    if content:
        response["content"] = {media: {"schema": schema} for media, schema in content.items()}
    return response


def _error_responses(codes: list[str], dialect: Dialect) -> dict[str, Schema]:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(error_status(dialect, code, ERROR_CODES[code][0]), []).append(code)
    envelope = {"application/json": {"$ref": SCHEMA_REF.format(name=_error_schema(dialect))}}
    return {
        str(status): _response(
            "Error: " + ", ".join(f"`{c}`" for c in status_codes), envelope, retry_after=status == 503
        )
        for status, status_codes in sorted(by_status.items())
    }


def _query_parameters(query: type[msgspec.Struct]) -> list[Schema]:
    (_,), components = msgspec.json.schema_components([query], ref_template=SCHEMA_REF)
    _describe(components, [query])
    schema = components[query.__name__]
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        if prop.get("default", 0) is None:  # a query string has no null: ``T | None = None`` means optional
            del prop["default"]
            (prop["schema"],) = [branch for branch in prop.pop("anyOf") if branch != {"type": "null"}]
            prop.update(prop.pop("schema"))
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameters.append(parameter)
    return parameters


def _operation(method: str, path: str, op: Operation, schema_of: dict[Any, Schema]) -> Schema:
    operation: Schema = {"operationId": method.lower() + "_" + re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")}
    operation["summary"] = op.summary
    if op.description:
        operation["description"] = op.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema_of[op.body]}}}
    websocket = 101 in op.answers
    responses = {
        str(status): _response(answer.description, _content(answer, schema_of), request_id=not websocket)
        for status, answer in op.answers.items()
    }
    for status, response in _error_responses(_error_codes(op), op.dialect).items():
        responses.setdefault(status, response)
    if op.upstream:
        responses["default"] = _response(
            _UPSTREAM, {"application/json": {"$ref": SCHEMA_REF.format(name=_error_schema(op.dialect))}}
        )
    operation["responses"] = dict(sorted(responses.items()))
    operation["security"] = _SECURITY[op.auth]
    return operation


def _content(answer: Answer, schema_of: dict[Any, Schema]) -> Schema:
    content = {} if answer.body is None else {"application/json": schema_of[answer.body]}
    return {**content, **answer.media}


def build_document() -> Schema:
    """The OpenAPI 3.1 document of ``OPERATIONS``."""
    types: list[Any] = [ErrorEnvelope, AnthropicError]
    for op in OPERATIONS.values():
        types += [op.body, *(a.body for a in op.answers.values())]
    types = list(dict.fromkeys(t for t in types if t is not None))
    schemas, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    _describe(components, _structs(types))
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, Schema] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Potluck hub",
            "version": __version__,
            "description": "One OpenAI-compatible endpoint over pooled LLM servers. Prose: docs/api.md.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES, "headers": _HEADERS},
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_JSON], content_type="application/json")


@functools.cache
def _encoded_document() -> bytes:
    """Built once per process: the document depends on the code only, and building it reads source files."""
    return msgspec.json.encode(build_document())


def add_routes(app: web.Application) -> None:
    app[OPENAPI_JSON] = _encoded_document()
    app.router.add_get("/openapi.json", openapi_json)
