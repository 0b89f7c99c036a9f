"""The docs cannot drift from the code: settings, CLI options, protocol messages, routes, error codes, metrics.

These checks read one table or section each; tests/test_docs_claims.py checks the claims of each kind in
every doc (commands, options, defaults, statuses, routes, headers, paths, links).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
import typing
from pathlib import Path
from types import ModuleType

import click
import pytest
from prometheus_client import CollectorRegistry

from potluck.agent.settings import AgentSettings
from potluck.api import agent_ws
from potluck.app import create_app
from potluck.cli.main import cli
from potluck.hub import gate
from potluck.hub.auth import AdminAuth
from potluck.hub.metrics import HubMetrics
from potluck.hub.settings import HubSettings
from potluck.protocol import agent as proto
from potluck.protocol.errors import ERROR_CODES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATOR = ROOT / "scripts" / "gen_protocol_docs.py"
CONFIG_GENERATOR = ROOT / "scripts" / "gen_config_docs.py"

SETTINGS = [("hub", HubSettings), ("agent", AgentSettings)]


def read(name: str) -> str:
    return (DOCS / name).read_text()


def section(text: str, heading_start: str) -> str:
    """The text under the first ``## `` heading that starts with ``heading_start``, up to the next one."""
    match = re.search(rf"^## {re.escape(heading_start)}.*?$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section '## {heading_start}...'"
    return match.group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (separator rows skipped)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.setdefault(cells[0], cells)
    return rows


def options(command_name: str) -> dict[str, click.Option]:
    command = cli.commands[command_name]
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name is not None}


def load_generator(path: Path = GENERATOR) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- configuration.md -------------------------------------------------------------------------------


@pytest.mark.parametrize(("command_name", "settings_cls"), SETTINGS)
def test_every_settings_field_is_documented_with_its_cli_option(command_name: str, settings_cls: type) -> None:
    rows = table_rows(section(read("configuration.md"), f"`potluck {command_name}`"))
    opts = options(command_name)
    for field in dataclasses.fields(settings_cls):
        row = rows.get(f"`{field.name}`")
        assert row is not None, f"{settings_cls.__name__}.{field.name} is missing from docs/configuration.md"
        option = opts.get(field.name)
        if option is None:
            assert row[1].startswith("—"), f"{field.name} has no CLI option; its row must say so, not {row[1]!r}"
            assert row[2] == "—", f"{field.name} has no environment variable; its row must say so"
        else:
            assert row[1] == f"`{option.opts[0]}`", f"{field.name}: documented option {row[1]!r}"
            assert row[2] == f"`{option.envvar}`", f"{field.name}: documented variable {row[2]!r}"
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            continue
        if default is dataclasses.MISSING:
            assert row[3] == "required", f"{field.name} is required"
        elif isinstance(default, bool):
            assert row[3] == ("on" if default else "off"), f"{field.name}: default {row[3]!r}"
        elif isinstance(default, int | float | str) and default != "":
            assert f"`{default}`" in row[3], f"{field.name}: default {default!r}, documented {row[3]!r}"


@pytest.mark.parametrize(("command_name", "settings_cls"), SETTINGS)
def test_configuration_lists_no_setting_that_does_not_exist(command_name: str, settings_cls: type) -> None:
    rows = table_rows(section(read("configuration.md"), f"`potluck {command_name}`"))
    fields = {f"`{f.name}`" for f in dataclasses.fields(settings_cls)}
    assert set(rows) - {"field"} <= fields


@pytest.mark.parametrize("command_name", ["hub", "agent"])
def test_every_cli_option_is_documented_with_its_environment_variable(command_name: str) -> None:
    rows = table_rows(section(read("configuration.md"), f"`potluck {command_name}`"))
    by_option = {row[1]: row for row in rows.values()}
    for option in options(command_name).values():
        row = by_option.get(f"`{option.opts[0]}`")
        assert row is not None, f"potluck {command_name} {option.opts[0]} is missing from docs/configuration.md"
        assert row[2] == f"`{option.envvar}`", f"{option.opts[0]}: documented variable {row[2]!r}"


@pytest.mark.parametrize("command_name", ["hub", "agent"])
def test_generated_option_tables_are_current(command_name: str) -> None:
    generator = load_generator(CONFIG_GENERATOR)
    block = generator.current_block(read("configuration.md"), command_name)
    assert block == generator.render_table(command_name), (
        "docs/configuration.md is stale: run scripts/gen_config_docs.py --write"
    )


# -- protocol.md ------------------------------------------------------------------------------------


def test_every_protocol_message_is_documented() -> None:
    text = read("protocol.md")
    for cls in {*typing.get_args(proto.HubToAgent), *typing.get_args(proto.AgentToHub)}:
        assert cls.__name__ in text, f"{cls.__name__} is missing from docs/protocol.md"


def test_every_frame_type_is_explained_outside_the_generated_block() -> None:
    text = read("protocol.md")
    generator = load_generator()
    prose = text[: text.index(generator.BEGIN)] + text[text.index(generator.END) :]
    for frame_type in proto.FrameType:
        assert f"`{frame_type.name}`" in prose, f"no prose in docs/protocol.md about {frame_type.name} frames"


def test_generated_message_reference_is_current() -> None:
    generator = load_generator()
    block = generator.current_block(read("protocol.md"))
    assert block == generator.render(), "docs/protocol.md is stale: run scripts/gen_protocol_docs.py --write"


def test_every_reject_code_is_documented() -> None:
    codes: set[str] = set()
    for module in (gate, agent_ws):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("Rejection", "AgentViolationError")
            ):
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    codes.add(first.value)
    assert len(codes) >= 5, f"could not find the reject codes in hub/gate.py: {codes}"
    documented = {k.strip("`") for k in table_rows(section(read("protocol.md"), "Handshake"))}
    assert codes <= documented, f"reject codes missing from docs/protocol.md: {codes - documented}"
    assert documented - {"code"} <= codes, f"documented reject codes that do not exist: {documented - codes}"


# -- api.md -----------------------------------------------------------------------------------------


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("x"))
    text = read("api.md")
    routes = {f"{r.method} {r.resource.canonical}" for r in app.router.routes() if r.method != "HEAD" and r.resource}
    assert routes, "create_app registered no routes"
    for route in routes:
        assert f"`{route}`" in text, f"{route} is missing from docs/api.md"
    overview = {k.strip("`") for k in table_rows(text[: text.index("\n## ")])} - {"route"}
    assert overview == routes, f"the route table in docs/api.md differs: {overview ^ routes}"


def test_every_error_code_is_documented_with_its_status_and_type() -> None:
    rows = table_rows(section(read("api.md"), "Errors"))
    for code, (status, type_) in ERROR_CODES.items():
        row = rows.get(f"`{code}`")
        assert row is not None, f"error code {code} is missing from docs/api.md"
        assert row[1] == str(status), f"{code}: status {status}, documented {row[1]}"
        assert row[2] == f"`{type_}`", f"{code}: type {type_}, documented {row[2]}"
    assert {k.strip("`") for k in rows} - {"code"} <= set(ERROR_CODES)


# -- operations.md ----------------------------------------------------------------------------------


def test_every_metric_is_documented() -> None:
    registry = CollectorRegistry()
    HubMetrics(registry)
    names = {f.name + "_total" if f.type == "counter" else f.name for f in registry.collect()}
    rows = table_rows(section(read("operations.md"), "Monitoring"))
    documented = {k.strip("`") for k in rows if k.startswith("`potluck_")}
    assert documented == names, f"metrics table in docs/operations.md differs: {documented ^ names}"
