"""Generate the message reference of docs/protocol.md from the msgspec Structs in potluck.protocol.agent.

Types, defaults and tags come from msgspec's own view of each Struct (`msgspec.inspect.type_info`);
descriptions are the docstrings written under each class and field, read from the source with `ast`.

    python scripts/gen_protocol_docs.py           # print the generated block
    python scripts/gen_protocol_docs.py --write   # replace the block between the markers in docs/protocol.md
    python scripts/gen_protocol_docs.py --check   # exit 1 if docs/protocol.md is out of date

tests/test_docs.py fails when the block in docs/protocol.md differs from `render()`.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import typing
from pathlib import Path

import msgspec
import msgspec.inspect as mi

from potluck.protocol import agent as proto
from potluck.protocol import metrics

BEGIN = "<!-- BEGIN GENERATED MESSAGES -->"
END = "<!-- END GENERATED MESSAGES -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# Frame types whose stream_id names a relayed request; every other frame uses stream_id 0.
PER_STREAM = frozenset(
    {
        proto.FrameType.REQUEST,
        proto.FrameType.HEAD,
        proto.FrameType.DATA,
        proto.FrameType.END,
        proto.FrameType.CANCEL,
        proto.FrameType.CREDIT,
    }
)


def _docstrings() -> dict[str, tuple[str, dict[str, str]]]:
    """Class name -> (class docstring, {field: docstring}) from the protocol module's source."""
    source = inspect.getsource(proto) + "\n" + inspect.getsource(metrics)
    tree = ast.parse(source)
    result: dict[str, tuple[str, dict[str, str]]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        body = node.body
        for stmt, after in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                fields[stmt.target.id] = after.value.value
        result[node.name] = (ast.get_docstring(node) or "", fields)
    return result


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


_SIMPLE_TYPES: dict[type, str] = {
    mi.IntType: "int",
    mi.FloatType: "float",
    mi.StrType: "str",
    mi.BoolType: "bool",
    mi.BytesType: "bytes",
    mi.NoneType: "None",
    mi.AnyType: "any",
}


def _type_name(t: mi.Type) -> str:
    simple = _SIMPLE_TYPES.get(type(t))
    if simple is not None:
        return simple
    if isinstance(t, mi.ListType):
        return f"list[{_type_name(t.item_type)}]"
    if isinstance(t, mi.DictType):
        return f"dict[{_type_name(t.key_type)}, {_type_name(t.value_type)}]"
    if isinstance(t, mi.TupleType):
        return "tuple[" + ", ".join(_type_name(i) for i in t.item_types) + "]"
    if isinstance(t, mi.VarTupleType):
        return f"tuple[{_type_name(t.item_type)}, ...]"
    if isinstance(t, mi.UnionType):
        return " | ".join(_type_name(i) for i in t.types)
    if isinstance(t, mi.StructType):
        return t.cls.__name__
    if isinstance(t, mi.LiteralType):
        return " | ".join(msgspec.json.encode(v).decode() for v in t.values)
    raise TypeError(f"no rendering for {t!r}")


def _nested_structs(t: mi.Type) -> list[type[msgspec.Struct]]:
    if isinstance(t, mi.StructType):
        return [t.cls]
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return _nested_structs(t.item_type)
    if isinstance(t, mi.DictType):
        return _nested_structs(t.key_type) + _nested_structs(t.value_type)
    if isinstance(t, mi.TupleType | mi.UnionType):
        items = t.item_types if isinstance(t, mi.TupleType) else t.types
        return [s for i in items for s in _nested_structs(i)]
    return []


def _default(field: mi.Field) -> str:
    if field.required:
        return "required"
    value = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
    return "`" + msgspec.json.encode(value).decode() + "`"


def _struct_info(cls: type[msgspec.Struct]) -> mi.StructType:
    info = mi.type_info(cls)
    if not isinstance(info, mi.StructType):
        raise TypeError(f"{cls!r} is not a msgspec Struct")
    return info


def _struct_section(
    cls: type[msgspec.Struct], docs: dict[str, tuple[str, dict[str, str]]], heading: str, facts: str = ""
) -> list[str]:
    info = _struct_info(cls)
    class_doc, field_docs = docs.get(cls.__name__, ("", {}))
    lines = [heading, ""]
    if facts:
        lines += [facts, ""]
    if class_doc:
        lines += [_one_line(class_doc), ""]
    if info.tag is not None:
        wire = f'meta is a msgpack map with `"{info.tag_field}": "{info.tag}"` first, then the fields by name'
    else:
        wire = "encoded as a msgpack map of the fields by name"
    if cls.__struct_config__.omit_defaults:
        wire += "; fields equal to their default are left out"
    lines += [f"Wire: {wire}.", ""]
    if not info.fields:
        return [*lines, "No fields.", ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    for field in info.fields:
        meaning = _one_line(field_docs.get(field.name, "")) or "—"
        type_text = _type_name(field.type).replace("|", "\\|")
        lines.append(f"| `{field.encode_name}` | `{type_text}` | {_default(field)} | {meaning} |")
    return [*lines, ""]


def _anchor(text: str) -> str:
    """GitHub's heading anchor."""
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _heading(cls: type[msgspec.Struct]) -> str:
    return f"{_struct_info(cls).tag} — {cls.__name__}"


class _Messages:
    """The message Structs of both unions, with their frame types and directions."""

    def __init__(self) -> None:
        self.hub_to_agent = typing.get_args(proto.HubToAgent)
        self.agent_to_hub = typing.get_args(proto.AgentToHub)
        self.frame_type = dict(proto._TYPE_OF)
        self.by_frame_type = {ft: cls for cls, ft in self.frame_type.items()}
        unique = dict.fromkeys([*self.hub_to_agent, *self.agent_to_hub])
        self.all = sorted(unique, key=lambda c: int(self.frame_type[c]))

    def direction(self, cls: type[msgspec.Struct]) -> str:
        if cls in self.hub_to_agent and cls in self.agent_to_hub:
            return "both ways"
        return "hub → agent" if cls in self.hub_to_agent else "agent → hub"


def _scope(ft: proto.FrameType) -> str:
    return "the request's stream" if ft in PER_STREAM else "0"


def _constants() -> list[str]:
    return [
        "### Constants",
        "",
        "| name | value |",
        "|---|---|",
        f"| `PROTOCOL_VERSION` | `{proto.PROTOCOL_VERSION}` |",
        f"| `AUTH_CONTEXT` | `{proto.AUTH_CONTEXT!r}` ({len(proto.AUTH_CONTEXT)} bytes) |",
        f"| `HEADER_SIZE` | `{proto.HEADER_SIZE}` bytes (`u32 length, u8 type, u32 stream_id, u32 meta_length`) |",
        "",
    ]


def _frame_types(messages: _Messages) -> list[str]:
    lines = ["### Frame types", "", "| type | name | direction | stream_id | meta |", "|---|---|---|---|---|"]
    for ft in proto.FrameType:
        cls = messages.by_frame_type.get(ft)
        if cls is None:  # DATA: no message, the payload is the backend's bytes
            meta, direction = "empty; payload = backend bytes, untouched", "agent → hub"
        else:
            meta, direction = f"[`{cls.__name__}`](#{_anchor(_heading(cls))})", messages.direction(cls)
        lines.append(f"| {int(ft)} | `{ft.name}` | {direction} | {_scope(ft)} | {meta} |")
    return [*lines, ""]


def _embedded(roots: list[type[msgspec.Struct]]) -> list[type[msgspec.Struct]]:
    """Structs used inside the messages' fields, in first-use order, transitively."""
    found: list[type[msgspec.Struct]] = []
    queue = list(roots)
    while queue:
        for field in _struct_info(queue.pop(0)).fields:
            for sub in _nested_structs(field.type):
                if sub not in found and sub not in roots:
                    found.append(sub)
                    queue.append(sub)
    return found


def render() -> str:
    """The Markdown that goes between the markers (without the markers)."""
    docs = _docstrings()
    messages = _Messages()
    out = [
        "<!-- Generated by scripts/gen_protocol_docs.py from src/potluck/protocol/agent.py; do not edit by hand. -->",
        "",
        *_constants(),
        *_frame_types(messages),
        "### Messages",
        "",
    ]
    for cls in messages.all:
        ft = messages.frame_type[cls]
        facts = f"Frame type `{ft.name}` = {int(ft)}; {messages.direction(cls)}; stream_id: {_scope(ft)}."
        out += _struct_section(cls, docs, f"#### {_heading(cls)}", facts)
    out += ["### Embedded types", ""]
    for sub in _embedded(messages.all):
        out += _struct_section(sub, docs, f"#### {sub.__name__}")
    return "\n".join(out).rstrip("\n") + "\n"


def current_block(text: str) -> str:
    """What docs/protocol.md holds between the markers now."""
    start = text.index(BEGIN) + len(BEGIN)
    stop = text.index(END)
    return text[start:stop].strip("\n") + "\n"


def replace_block(text: str, block: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    stop = text.index(END)
    return text[:start] + "\n" + block + text[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="update docs/protocol.md in place")
    group.add_argument("--check", action="store_true", help="exit 1 if docs/protocol.md is out of date")
    args = parser.parse_args(argv)
    block = render()
    if args.write:
        DOC.write_text(replace_block(DOC.read_text(), block))
        return 0
    if args.check:
        if current_block(DOC.read_text()) != block:
            sys.stderr.write("docs/protocol.md is out of date: run scripts/gen_protocol_docs.py --write\n")
            return 1
        return 0
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
