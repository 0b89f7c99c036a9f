"""`potluck claude` and `potluck codex`: run Claude Code or Codex CLI against the hub.

Each launcher works out the hub, an API key and the models, puts them where the tool reads them, and
replaces itself with the tool (``exec``), passing every argument it does not know through. The key
travels only in the tool's environment, never on a command line (where ``ps`` would show it).

- Claude Code reads environment variables: ``ANTHROPIC_BASE_URL`` (the hub; it appends
  ``/v1/messages``), ``ANTHROPIC_AUTH_TOKEN`` (sent as ``Authorization: Bearer``), ``ANTHROPIC_MODEL``
  and the tier defaults ``ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL`` (plus the older
  ``ANTHROPIC_SMALL_FAST_MODEL``), and ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` unless already set.
- Codex CLI reads ``config.toml``; the launcher leaves the user's file alone and defines a
  ``potluck`` model provider with ``-c`` overrides on Codex's command line (the hub's URL, the
  Responses wire API, and the *name* of the variable that holds the key, ``POTLUCK_API_KEY``), with its
  analytics, feedback uploads and update check off.

Either way the tool talks to the hub only, not to its vendor.

The key is ``--key`` / ``POTLUCK_API_KEY`` when given. Otherwise the launchers use the key they made
earlier for this hub (kept in ``$XDG_CONFIG_HOME/potluck/tools.json``, mode 0600) while the hub still
accepts it, or make one with the stored login (`potluck login`) and keep it there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from potluck.cli.session import call, hub_option, logged_in, resolve_hub

KEY_ENV = "POTLUCK_API_KEY"
"""The variable that holds the API key: read by the launchers (``--key``'s default) and by Codex."""
KEY_NAME = "coding tools (potluck claude/codex)"
"""The name of the key the launchers make with the stored login."""
PROVIDER_ID = "potluck"

# Variables that would send Claude Code somewhere other than the hub, or send the user's own Anthropic
# key to it (ANTHROPIC_API_KEY goes out as x-api-key beside our bearer token).
_CLAUDE_CLEARED = (
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "CLAUDE_CODE_USE_GATEWAY",
)

FC = TypeVar("FC", bound=Callable[..., Any])

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def _model_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (not value.strip() or value != value.strip()):
        raise click.BadParameter(f"{value!r} is not a model name", ctx=ctx, param=param)
    return value


def _launcher_options(func: FC) -> FC:
    func = click.argument("tool_args", nargs=-1, type=click.UNPROCESSED, metavar="[TOOL ARGS]...")(func)
    func = click.option(
        "--model",
        metavar="MODEL",
        callback=_model_name,
        help="The circle's model (or group alias) to use [default: the tool's own model names, mapped by the hub].",
    )(func)
    func = click.option(
        "--key",
        metavar="KEY",
        envvar=KEY_ENV,
        help=f"API key for the hub; prefer the {KEY_ENV} variable, which `ps` does not show"
        " [default: the key these launchers made with your login, or a new one].",
    )(func)
    return hub_option(func)


# -- the API key ------------------------------------------------------------------------------------


def _store_path() -> Path:
    from potluck.cli.client import config_path

    return config_path().parent / "tools.json"


def _stored_key(hub: str) -> str | None:
    """The key kept for this hub, if any (a damaged file counts as none: a new key replaces it)."""
    try:
        data = json.loads(_store_path().read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("hub") == hub and isinstance(data.get("key"), str) and data["key"]:
        return str(data["key"])
    return None


def _accepted(hub: str, key: str) -> bool:
    """False only when the hub refuses the key (revoked, expired); an unreachable hub is the tool's to report."""
    from potluck.cli.client import HubError, request

    try:
        request("GET", hub, "/v1/models", token=key, timeout=10)
    except HubError as exc:
        return exc.status != 401
    return True


def _api_key(hub_url: str | None, key: str | None) -> tuple[str, str]:
    """(hub, key): the key given, else the stored one while the hub accepts it, else a new one."""
    from potluck.cli.client import HubError, save_config

    hub = resolve_hub(hub_url)
    if key is not None:
        if not key.strip():
            raise click.BadParameter("the API key is empty", param_hint=f"--key / {KEY_ENV}")
        return hub, key.strip()
    stored = _stored_key(hub)
    if stored is not None and _accepted(hub, stored):
        return hub, stored
    try:
        hub, token = logged_in(hub)
    except click.ClickException as exc:
        raise click.UsageError(f"no API key: give --key or {KEY_ENV}, or log in first ({exc.message})") from None
    made = call("POST", hub, "/api/keys", token, {"name": KEY_NAME})
    secret = made.get("key")
    if not isinstance(secret, str) or not secret:
        raise click.ClickException(f"{hub} made a key but did not return it")
    try:
        path = save_config({"hub": hub, "key_id": str(made.get("id")), "key": secret}, _store_path())
    except (HubError, OSError) as exc:
        raise click.ClickException(f"cannot keep the new key: {exc}") from None
    click.echo(f"created API key {made.get('id')} ({KEY_NAME}) and kept it in {path}", err=True)
    return hub, secret


# -- launching --------------------------------------------------------------------------------------


def _exec(tool: str, package: str, hub: str, args: list[str], env: dict[str, str]) -> None:
    """Replace this process with the tool; never returns."""
    from potluck.cli.client import is_insecure

    path = shutil.which(tool, path=env.get("PATH", os.defpath))
    if path is None:
        raise click.ClickException(f"{tool} is not on PATH: install it with `npm install -g {package}`")
    if is_insecure(hub):
        click.echo(
            f"warning: {hub} is plain HTTP off this machine; the API key crosses the network unencrypted", err=True
        )
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(path, [tool, *args], env)  # noqa: S606 - the tool itself, no shell; argv as given
    except OSError as exc:
        raise click.ClickException(f"cannot run {path}: {exc.strerror}") from None


def claude_env(base: dict[str, str], hub: str, key: str, model: str | None, small_model: str | None) -> dict[str, str]:
    """Claude Code's environment: ``base`` with the hub, the key and the models set."""
    env = {name: value for name, value in base.items() if name not in _CLAUDE_CLEARED}
    env["ANTHROPIC_BASE_URL"] = hub
    env["ANTHROPIC_AUTH_TOKEN"] = key
    if model is not None:
        env["ANTHROPIC_MODEL"] = model
        env["ANTHROPIC_DEFAULT_OPUS_MODEL"] = model
        env["ANTHROPIC_DEFAULT_SONNET_MODEL"] = model
    small = small_model if small_model is not None else model
    if small is not None:
        env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] = small
        env["ANTHROPIC_SMALL_FAST_MODEL"] = small  # the name Claude Code 1.x reads
    # Talk to the hub only: no telemetry, error reports or update checks to Anthropic, unless asked for.
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    return env


def codex_overrides(hub: str, model: str | None) -> list[str]:
    """Codex's ``-c key=value`` arguments: the ``potluck`` provider and the model (values as TOML strings)."""

    def toml(value: str) -> str:
        return json.dumps(value)  # a JSON string is a TOML basic string

    settings = [
        ("model_provider", toml(PROVIDER_ID)),
        (f"model_providers.{PROVIDER_ID}.name", toml("Potluck")),
        (f"model_providers.{PROVIDER_ID}.base_url", toml(hub + "/v1")),
        (f"model_providers.{PROVIDER_ID}.wire_api", toml("responses")),
        (f"model_providers.{PROVIDER_ID}.env_key", toml(KEY_ENV)),
        ("show_raw_agent_reasoning", "true"),
        # Talk to the hub only: no analytics, feedback uploads or update checks to OpenAI.
        ("analytics.enabled", "false"),
        ("feedback.enabled", "false"),
        ("check_for_update_on_startup", "false"),
    ]
    if model is not None:
        settings.append(("model", toml(model)))
    return [arg for name, value in settings for arg in ("-c", f"{name}={value}")]


@click.command("claude", context_settings=_PASS_THROUGH)
@_launcher_options
@click.option(
    "--small-model",
    metavar="MODEL",
    callback=_model_name,
    help="The model for Claude Code's quick background work (its 'haiku' tier) [default: --model].",
)
def claude(
    hub_url: str | None, key: str | None, model: str | None, small_model: str | None, tool_args: tuple[str, ...]
) -> None:
    """Run Claude Code against the hub; arguments it does not know (or all after --) go to `claude`.

    \b
    potluck claude --model qwen3-coder
    potluck claude --model qwen3-coder -p "fix the failing test" --output-format json
    """
    hub, secret = _api_key(hub_url, key)
    env = claude_env(dict(os.environ), hub, secret, model, small_model)
    _exec("claude", "@anthropic-ai/claude-code", hub, list(tool_args), env)


@click.command("codex", context_settings=_PASS_THROUGH)
@_launcher_options
def codex(hub_url: str | None, key: str | None, model: str | None, tool_args: tuple[str, ...]) -> None:
    """Run Codex CLI against the hub; arguments it does not know (or all after --) go to `codex`.

    Your ~/.codex/config.toml is left as it is: the hub comes in as a `potluck` model provider given
    with -c on Codex's command line, and the key in the POTLUCK_API_KEY variable.

    \b
    potluck codex --model qwen3-coder
    potluck codex --model qwen3-coder exec "fix the failing test"
    """
    hub, secret = _api_key(hub_url, key)
    env = {**os.environ, KEY_ENV: secret}
    _exec("codex", "@openai/codex", hub, [*codex_overrides(hub, model), *tool_args], env)


COMMANDS: tuple[click.Command, ...] = (claude, codex)
