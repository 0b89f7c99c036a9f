"""The bodies of the hub's HTTP API as msgspec Structs, by area, each field documented.

Handlers decode requests into these types and build their answers from them; `potluck.api.operations`
names them per route and `potluck.api.openapi` turns that table into ``GET /openapi.json``. So the
document describes exactly what is decoded and served.
"""
