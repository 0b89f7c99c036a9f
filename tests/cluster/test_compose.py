"""deploy/compose.cluster.yaml cannot be run here (no Docker daemon): its potluck commands and settings are
checked against the real CLI, and its topology against what docs/operations.md promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from potluck.cli.main import cli
from potluck.hub.settings import HubSettings

COMPOSE = Path(__file__).parents[2] / "deploy" / "compose.cluster.yaml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_the_cluster_has_postgres_redis_two_replicas_a_proxy_and_an_agent() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "hub-1", "hub-2", "proxy", "agent"} <= set(services)
    for replica in ("hub-1", "hub-2"):
        env = services[replica]["environment"]
        assert env["POTLUCK_HUB_DATABASE_URL"].startswith("postgresql://")
        assert env["POTLUCK_HUB_REDIS_URL"].startswith("redis://")
        assert "POTLUCK_HUB_CLUSTER_SECRET" in env
    assert "http://proxy:8642" in services["agent"]["command"]  # agents re-home through the proxy


def test_every_potluck_command_and_variable_in_it_exists() -> None:
    services = _compose()["services"]
    known_env = {f"POTLUCK_HUB_{f.upper()}" for f in HubSettings.__dataclass_fields__} | {
        "POTLUCK_HUB_CLUSTER_SECRET",
        "POTLUCK_ADMIN_TOKEN",
    }
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] not in ("hub", "agent"):
            continue
        context = cli.make_context("potluck", list(command), resilient_parsing=False)
        group = context.command
        assert isinstance(group, click.Group)
        sub = group.get_command(context, command[0])
        assert sub is not None, name
        if isinstance(sub, click.Group) and not command[1].startswith("-"):
            assert sub.get_command(context, command[1]) is not None, name
        else:
            sub.make_context(command[0], list(command[1:]))  # raises on an unknown option
        if command[0] == "hub":
            assert set(service.get("environment", {})) <= known_env, name
