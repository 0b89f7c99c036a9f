"""`potluck tray`: `potluck agent` with a system-tray icon and a local status page (needs `potluck[tray]`)."""

from __future__ import annotations

import sys

import click

from potluck.agent.settings import AgentSettings
from potluck.cli.options import build, settings_options


@click.command("tray")
@settings_options(AgentSettings)
@click.option(
    "--status-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default="a free port",
    help="Port of the status page on 127.0.0.1.",
)
def tray(status_port: int, **options: object) -> None:
    """Run the agent with a tray icon (connected / serving N / paused / offline) and a status page.

    The icon's menu pauses and resumes the agent, opens the status page, the hub's dashboard and the
    log, and quits. It takes the options of `potluck agent`. After `potluck login` to the same hub the
    status page shows today's earnings too.
    """
    if not options["hub_url"]:
        raise click.UsageError("--hub is required to run the agent")
    settings = build(AgentSettings, options)
    try:
        settings.validate()
        settings = settings.with_token_from_file()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from potluck.tray import TrayUnavailableError, run_tray

    try:
        sys.exit(run_tray(settings, page_port=status_port, owner_token=_stored_login(settings.hub_url)))
    except TrayUnavailableError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _stored_login(hub_url: str) -> str | None:
    """The session token `potluck login` keeps, if it is for the hub this agent serves."""
    from potluck.agent.doctor import http_base
    from potluck.cli.client import HubError, load_config, normalize_hub

    stored = load_config()
    try:
        same = "hub" in stored and normalize_hub(stored["hub"]) == normalize_hub(http_base(hub_url))
    except HubError:
        return None
    return stored.get("token") if same else None
