"""The logged-in session of the user commands: which hub, the stored token, and calls to the hub.

`potluck.cli.client` is imported inside the functions, as the rest of the CLI does, so that the
daemon commands do not load it.
"""

from __future__ import annotations

from typing import Any

import click

hub_option = click.option(
    "--hub",
    "hub_url",
    metavar="URL",
    envvar="POTLUCK_HUB_URL",
    help="Hub URL, e.g. https://hub:8642 [default: the hub of the last `potluck login`].",
)


def fail(exc: Exception, *, hint: str = "") -> click.ClickException:
    """A failure as click reports it: ``Error: <the hub's message>`` on stderr, exit status 1."""
    return click.ClickException(f"{exc}{hint}")


def resolve_hub(hub_url: str | None) -> str:
    """The hub to talk to: ``--hub`` / ``POTLUCK_HUB_URL``, else the one stored by `potluck login`."""
    from potluck._shared.paths import suggest_scheme
    from potluck.cli.client import HubError, load_config, normalize_hub

    if hub_url:
        if "://" not in hub_url:
            # Guessing would be wrong half the time: https:// to a plain-HTTP hub fails in its TLS handshake.
            raise click.BadParameter(
                f"the URL needs a scheme: did you mean {suggest_scheme(hub_url)}?", param_hint="--hub"
            )
        try:
            return normalize_hub(hub_url)
        except HubError as exc:
            raise click.BadParameter(str(exc), param_hint="--hub") from None
    try:
        stored = load_config().get("hub")
    except HubError as exc:
        raise fail(exc) from None
    if not stored:
        raise click.UsageError("no hub: give --hub URL (or POTLUCK_HUB_URL), or run `potluck login --hub URL` first")
    return stored


def logged_in(hub_url: str | None) -> tuple[str, str]:
    """(hub, token) of the stored login. The token is only ever sent to the hub that issued it."""
    from potluck.cli.client import HubError, load_config

    hub = resolve_hub(hub_url)
    try:
        config = load_config()
    except HubError as exc:
        raise fail(exc) from None
    token = config.get("token")
    if not token or config.get("hub") != hub:
        raise click.ClickException(f"not logged in to {hub}: run `potluck login --hub {hub}`")
    return hub, token


def call(method: str, hub: str, path: str, token: str, body: object = None) -> dict[str, Any]:
    """A user-API call; on failure the hub's message, exit status 1."""
    from potluck.cli.client import HubError, request

    try:
        return request(method, hub, path, token=token, body=body)
    except HubError as exc:
        hint = " (run `potluck login` again)" if exc.status == 401 else ""
        raise fail(exc, hint=hint) from None


def fetch(hub: str, path: str, token: str | None, *, accept: str = "application/json") -> bytes:
    """A GET whose answer is kept as the hub sent it (CSV, a signed receipt, the hub's key)."""
    from potluck.cli.client import HubError, request_bytes

    try:
        return request_bytes("GET", hub, path, token=token, accept=accept)
    except HubError as exc:
        hint = " (run `potluck login` again)" if exc.status == 401 else ""
        raise fail(exc, hint=hint) from None


def path_id(value: str) -> str:
    """An id as one URL path segment (so ``../`` cannot reach another route)."""
    from urllib.parse import quote

    return quote(value, safe="")
