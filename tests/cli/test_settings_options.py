"""`potluck hub` and `potluck agent` options come from the settings classes; bad start-up input is a usage error.

Options are parsed with click's own machinery (`make_context`, `CliRunner`) in process: nothing starts
unless the settings are valid, and each refusal below happens before that. The missing-extras case runs
in a subprocess whose Python cannot import the hub's dependencies.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from potluck.agent.settings import AgentSettings
from potluck.cli.main import cli
from potluck.cli.options import build
from potluck.hub.settings import HubSettings

SETTINGS: list[tuple[str, Any]] = [("hub", HubSettings), ("agent", AgentSettings)]

# The option → environment variable pairs that existed before the options were generated: scripts and
# unit files use them, so each must still work under the same names.
BEFORE = {
    "hub": {
        "--host": "POTLUCK_HUB_HOST",
        "--port": "POTLUCK_HUB_PORT",
        "--data-dir": "POTLUCK_HUB_DATA_DIR",
        "--database-url": "POTLUCK_HUB_DATABASE_URL",
        "--admin-token": "POTLUCK_ADMIN_TOKEN",
        "--max-queue": "POTLUCK_HUB_MAX_QUEUE",
        "--queue-timeout": "POTLUCK_HUB_QUEUE_TIMEOUT",
        "--max-body-bytes": "POTLUCK_HUB_MAX_BODY_BYTES",
        "--heartbeat-interval": "POTLUCK_HUB_HEARTBEAT_INTERVAL",
        "--heartbeat-timeout": "POTLUCK_HUB_HEARTBEAT_TIMEOUT",
        "--first-byte-timeout": "POTLUCK_HUB_FIRST_BYTE_TIMEOUT",
        "--idle-timeout": "POTLUCK_HUB_IDLE_TIMEOUT",
        "--max-attempts": "POTLUCK_HUB_MAX_ATTEMPTS",
        "--scheduler-policy": "POTLUCK_HUB_SCHEDULER_POLICY",
        "--score-weight": "POTLUCK_HUB_SCORE_WEIGHTS",
        "--queue-user-share": "POTLUCK_HUB_QUEUE_USER_SHARE",
        "--eject-failures": "POTLUCK_HUB_EJECT_FAILURES",
        "--eject-base-s": "POTLUCK_HUB_EJECT_BASE_S",
        "--eject-max-percent": "POTLUCK_HUB_EJECT_MAX_PERCENT",
        "--retry-budget-percent": "POTLUCK_HUB_RETRY_BUDGET_PERCENT",
        "--platform-fee-percent": "POTLUCK_HUB_PLATFORM_FEE_PERCENT",
        "--signing-key-file": "POTLUCK_HUB_SIGNING_KEY_FILE",
        "--reprice-interval": "POTLUCK_HUB_REPRICE_INTERVAL",
        "--shutdown-timeout": "POTLUCK_HUB_SHUTDOWN_TIMEOUT",
        "--tls-cert": "POTLUCK_HUB_TLS_CERT",
        "--tls-key": "POTLUCK_HUB_TLS_KEY",
        "--allow-insecure-http": "POTLUCK_HUB_ALLOW_INSECURE_HTTP",
        "--log-level": "POTLUCK_HUB_LOG_LEVEL",
    },
    "agent": {
        "--hub": "POTLUCK_AGENT_HUB",
        "--token": "POTLUCK_AGENT_TOKEN",
        "--backend": "POTLUCK_AGENT_BACKENDS",
        "--scan-ports": "POTLUCK_AGENT_SCAN_PORTS",
        "--auto": "POTLUCK_AGENT_AUTO_DETECT",
        "--name": "POTLUCK_AGENT_NAME",
        "--max-concurrency": "POTLUCK_AGENT_MAX_CONCURRENCY",
        "--data-dir": "POTLUCK_AGENT_DATA_DIR",
        "--drain-timeout": "POTLUCK_AGENT_DRAIN_TIMEOUT",
        "--catalog-interval": "POTLUCK_AGENT_CATALOG_INTERVAL",
        "--rescan-interval": "POTLUCK_AGENT_RESCAN_INTERVAL",
        "--metrics-interval": "POTLUCK_AGENT_METRICS_INTERVAL",
        "--allow-insecure": "POTLUCK_AGENT_ALLOW_INSECURE",
        "--log-level": "POTLUCK_AGENT_LOG_LEVEL",
    },
}


@pytest.fixture(autouse=True)
def no_potluck_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options under test read POTLUCK_* variables: none may leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("POTLUCK_"):
            monkeypatch.delenv(name)


def options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option) and p.name}


def parse(command: str, *args: str) -> dict[str, Any]:
    """What click makes of ``potluck COMMAND ARGS`` (defaults and environment included), without running it."""
    with cli.commands[command].make_context(command, list(args), resilient_parsing=False) as ctx:
        return dict(ctx.params)


# -- one source: the settings classes --------------------------------------------------------------


@pytest.mark.parametrize(("command", "settings_cls"), SETTINGS)
def test_every_setting_has_an_option_with_help_and_an_environment_variable(command: str, settings_cls: Any) -> None:
    opts = options(command)
    prefix = settings_cls.ENV_PREFIX
    for field in dataclasses.fields(settings_cls):
        option = opts.get(field.name)
        assert option is not None, f"{settings_cls.__name__}.{field.name} has no option on potluck {command}"
        assert option.help, f"potluck {command} {option.opts[0]} has no help"
        assert option.show_envvar
        assert isinstance(option.envvar, str)
        assert option.envvar.startswith("POTLUCK_"), option.envvar
        if option.envvar not in BEFORE[command].values():  # a name kept from before, or the rule
            assert option.envvar == prefix + field.name.upper()
    assert set(opts) == {f.name for f in dataclasses.fields(settings_cls)}, "an option that is no setting"


@pytest.mark.parametrize("command", ["hub", "agent"])
def test_the_options_and_environment_variables_of_before_keep_their_names(command: str) -> None:
    now = {option.opts[0]: option.envvar for option in options(command).values()}
    for name, env in BEFORE[command].items():
        assert now.get(name) == env, f"potluck {command} {name}: variable {now.get(name)!r}, was {env}"


@pytest.mark.parametrize("command", ["hub", "agent"])
def test_every_option_and_its_variable_appear_in_the_help(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    for option in options(command).values():
        assert option.opts[0] in result.output
        assert f"env var: {option.envvar}" in result.output


def test_without_options_the_settings_are_the_dataclass_defaults() -> None:
    assert build(HubSettings, parse("hub")) == HubSettings()
    hub_url = "http://127.0.0.1:8642"
    assert build(AgentSettings, parse("agent", "--hub", hub_url)) == AgentSettings(hub_url=hub_url)


def test_environment_variables_set_every_kind_of_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "POTLUCK_HUB_MAX_QUEUE": "7",
        "POTLUCK_HUB_QUEUE_TIMEOUT": "1.5",
        "POTLUCK_HUB_DATA_DIR": str(tmp_path),
        "POTLUCK_ADMIN_TOKEN": "padm-x",
        "POTLUCK_HUB_SCORE_WEIGHTS": "hot=50,load=2",
        "POTLUCK_HUB_SCHEDULER_POLICY": "round_robin",
        "POTLUCK_HUB_ALLOW_INSECURE_HTTP": "yes",
        "POTLUCK_HUB_CREDIT_WINDOW": "65536",
        "POTLUCK_HUB_LOG_LEVEL": "WARNING",  # levels were read in any case before; they still are
    }.items():
        monkeypatch.setenv(name, value)
    hub = build(HubSettings, parse("hub"))
    assert (hub.max_queue, hub.queue_timeout, hub.data_dir) == (7, 1.5, tmp_path)
    assert (hub.admin_token, hub.score_weights, hub.scheduler_policy) == ("padm-x", "hot=50,load=2", "round_robin")
    assert (hub.allow_insecure_http, hub.credit_window, hub.log_level) == (True, 65536, "warning")

    for name, value in {
        "POTLUCK_AGENT_HUB": "http://127.0.0.1:9",
        "POTLUCK_AGENT_BACKENDS": "http://127.0.0.1:11434 http://127.0.0.1:8000,kind=vllm",
        "POTLUCK_AGENT_SCAN_PORTS": "9001, 9002",
        "POTLUCK_AGENT_AUTO_DETECT": "false",
        "POTLUCK_AGENT_NAME": "attic",
        "POTLUCK_AGENT_RECONNECT_MIN": "0.1",
    }.items():
        monkeypatch.setenv(name, value)
    agent = build(AgentSettings, parse("agent"))
    assert agent.hub_url == "http://127.0.0.1:9"
    assert agent.backends == ("http://127.0.0.1:11434", "http://127.0.0.1:8000,kind=vllm")
    assert (agent.scan_ports, agent.auto_detect, agent.name, agent.reconnect_min) == ((9001, 9002), False, "attic", 0.1)


def test_an_option_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POTLUCK_HUB_PORT", "1111")
    monkeypatch.setenv("POTLUCK_HUB_SCORE_WEIGHTS", "hot=1")
    hub = build(HubSettings, parse("hub", "--port", "2222", "--score-weight", "load=3", "--score-weight", "gpu=0"))
    assert (hub.port, hub.score_weights) == (2222, "load=3,gpu=0")


# -- start-up refusals: exit status 2 and a message, never a traceback --------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def test_an_unknown_backend_kind_is_a_usage_error_listing_the_kinds(tmp_path: Path) -> None:
    for args in (
        [
            "agent",
            "--hub",
            "http://127.0.0.1:9",
            "--data-dir",
            str(tmp_path),
            "--backend",
            "http://127.0.0.1:1,kind=foo",
        ],
        ["agent", "--backend", "http://127.0.0.1:1,kind=foo", "scan"],
    ):
        code, output = run(*args)
        assert code == 2, output
        assert "Invalid value for '--backend': unknown backend kind 'foo'" in output
        assert (
            "the kinds are jan, koboldcpp, llamacpp, lmstudio, localai, ollama, openai, sglang, tgwui, vllm" in output
        )


def test_a_bad_scan_port_names_its_option() -> None:
    code, output = run("agent", "--scan-ports", "80,nope", "scan")
    assert code == 2
    assert "Invalid value for '--scan-ports': 'nope' is not a port number" in output


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("127.0.0.1:8642", "http://127.0.0.1:8642"),
        ("localhost:8642", "http://localhost:8642"),
        ("hub.example:8642", "https://hub.example:8642"),
    ],
)
def test_a_hub_url_without_a_scheme_is_a_usage_error_that_says_which_to_write(
    tmp_path: Path, given: str, meant: str
) -> None:
    code, output = run("agent", "--hub", given, "--data-dir", str(tmp_path))
    assert code == 2, output
    assert f"--hub needs a scheme: did you mean {meant}?" in output
    # The user commands take --hub too, and say the same instead of trying https:// and failing in TLS.
    code, output = run("agent", "list", "--hub", given)
    assert code == 2, output
    assert f"Invalid value for --hub: the URL needs a scheme: did you mean {meant}?" in output


@pytest.mark.parametrize(("low", "high"), [(0.0, 30.0), (5.0, 1.0)])
def test_reconnect_bounds_must_be_ordered_and_positive(tmp_path: Path, low: float, high: float) -> None:
    code, output = run(
        "agent", "--hub", "http://127.0.0.1:9", "--data-dir", str(tmp_path),
        "--reconnect-min", str(low), "--reconnect-max", str(high),
    )  # fmt: skip
    assert code == 2, output
    assert "--reconnect-min must be positive and at most --reconnect-max" in output


def test_a_bad_log_level_is_a_usage_error() -> None:
    code, output = run("hub", "--log-level", "loud")
    assert code == 2
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error', 'critical'" in output


def _python_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python where importing any of ``modules`` fails as if it were not installed."""
    blocker = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


HUB_EXTRAS = ["sqlalchemy", "aiosqlite", "alembic", "argon2", "prometheus_client"]


def test_hub_without_its_extras_says_to_install_them(tmp_path: Path) -> None:
    done = _python_without(
        HUB_EXTRAS, f"from potluck.cli.main import cli; cli(['hub', '--data-dir', {str(tmp_path)!r}])"
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "potluck hub needs the hub's extra dependencies" in done.stderr
    assert "pip install 'potluck[hub]'" in done.stderr


def test_the_agent_needs_none_of_the_hub_extras() -> None:
    done = _python_without(
        HUB_EXTRAS,
        """
        import potluck.agent.daemon
        from potluck.cli.main import cli
        cli(['agent', '--help'])
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "--reconnect-min" in done.stdout


def test_hub_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "potluck", "hub", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"Error: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
