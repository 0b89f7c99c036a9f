"""`potluck doctor agent|hub`: checks with a fix for each problem; exit status 1 when any check FAILs.

`potluck doctor agent` takes the options of `potluck agent` (swap the words in the command you run
it with); `potluck doctor hub` those of `potluck hub`. ``--json`` prints one object for scripts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import click

from potluck._shared.checkup import Check, Level
from potluck.agent.settings import AgentSettings
from potluck.cli.options import build, settings_options
from potluck.hub.settings import HubSettings

_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red"}

json_option = click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")


def report(checks: Sequence[Check], as_json: bool) -> None:
    """Print the checks and exit 1 if any FAILed."""
    failed = any(c.level is Level.FAIL for c in checks)
    if as_json:
        import msgspec

        body = {"ok": not failed, "checks": [_as_dict(c) for c in checks]}
        click.echo(msgspec.json.encode(body).decode())
    else:
        for check in checks:
            label = click.style(f"{check.level.value.upper():<4}", fg=_STYLE[check.level], bold=True)
            click.echo(f"{label}  {check.name}: {check.summary}")
            if check.fix:
                click.echo(f"      fix: {check.fix}")
    sys.exit(1 if failed else 0)


def _as_dict(check: Check) -> dict[str, str | None]:
    return {"name": check.name, "level": check.level.value, "summary": check.summary, "fix": check.fix}


@click.group("doctor")
def doctor() -> None:
    """Check this machine's setup: OK, WARN or FAIL per check, with a fix for each problem."""


@doctor.command("agent")
@settings_options(AgentSettings)
@json_option
def doctor_agent(as_json: bool, **options: object) -> None:
    """Check an agent's setup: backends and their models, GPUs, the hub (reachability, TLS, readiness, clock),
    its key and data dir. Takes the options of `potluck agent`."""
    from potluck.agent.doctor import agent_checks

    settings = build(AgentSettings, {**options, "hub_url": options["hub_url"] or ""})
    report(asyncio.run(agent_checks(settings)), as_json)


@doctor.command("hub")
@settings_options(HubSettings)
@json_option
def doctor_hub(as_json: bool, **options: object) -> None:
    """Check a hub's setup: settings, data dir, database file, admin token hash and key modes, TLS, and that it
    answers on its address. Takes the options of `potluck hub`."""
    from potluck._shared.clock import SystemClock
    from potluck.agent.doctor import hub_checks

    try:
        from potluck.app import ADMIN_TOKEN_FILE
        from potluck.hub.doctor import hub_file_checks
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "potluck":
            raise
        raise click.ClickException(
            f"the hub's checks need its extras (no module {exc.name!r}): pip install 'potluck[hub]'"
        ) from None

    settings = build(HubSettings, options)
    clock = SystemClock()
    checks = hub_file_checks(settings, ADMIN_TOKEN_FILE, clock)
    if all(c.name != "settings" for c in checks):
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
        scheme = "https" if settings.tls_cert else "http"
        address = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{address}:{settings.port}"
        # The clock check is against itself here: meaningless, so only reachability and TLS.
        checks += [c for c in asyncio.run(hub_checks(url, clock, verify=False)) if c.name != "clock"]
    report(checks, as_json)
