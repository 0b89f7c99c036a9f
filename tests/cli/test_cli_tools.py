"""`potluck claude` and `potluck codex`: what the launched tool receives, exactly.

A fake `claude` / `codex` executable on PATH records its argv and environment into a file and exits
with a status of its own (so a launcher that ran it as a child, instead of becoming it, would show).
The commands run as subprocesses (the `Cli` helper of test_cli_groups.py).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from potluck.cli.tools import KEY_NAME
from testing.processes import HubProcess
from tests.cli.test_cli_groups import Cli, Result, create_user, login, make_cli, new_password, unique

TOOL_STATUS = 7
SECRET = "pk-test-secret-value"

FAKE_TOOL = """#!{python}
import json, os, sys
with open(os.environ["FAKE_TOOL_RECORD"], "w") as handle:
    json.dump({{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "env": dict(os.environ)}}, handle)
sys.exit({status})
"""


class Launcher:
    """Runs `potluck claude|codex` with fake tools first on PATH; `received()` is what the tool got."""

    def __init__(self, cli: Cli, root: Path) -> None:
        self.cli = cli
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.record = root / "received.json"
        for name in ("claude", "codex"):
            path = self.bin / name
            path.write_text(FAKE_TOOL.format(python=sys.executable, status=TOOL_STATUS))
            path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def __call__(self, *args: str, env: dict[str, str] | None = None, path: str | None = None) -> Result:
        self.record.unlink(missing_ok=True)
        full_env = {"PATH": path if path is not None else f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        full_env["FAKE_TOOL_RECORD"] = str(self.record)
        full_env.update(env or {})
        return self.cli(*args, env=full_env)

    def received(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record.read_text())
        return data


@pytest.fixture
def launch(tmp_path: Path) -> Launcher:
    return Launcher(Cli(tmp_path / "config"), tmp_path)


def ran_tool(result: Result) -> None:
    assert result.code == TOOL_STATUS, result.both
    assert "Traceback" not in result.both


# -- claude ---------------------------------------------------------------------------------------------


def test_claude_gets_hub_key_and_models_in_its_environment(launch: Launcher) -> None:
    result = launch(
        "claude", "--hub", "http://127.0.0.1:9/", "--model", "qwen3-coder", "--small-model", "qwen3-small",
        "-p", "fix it", "--output-format", "json",
        env={"POTLUCK_API_KEY": SECRET, "ANTHROPIC_API_KEY": "users-own-anthropic-key", "CLAUDE_CODE_USE_BEDROCK": "1"},
    )  # fmt: skip
    ran_tool(result)
    got = launch.received()
    assert got["argv"] == ["claude", "-p", "fix it", "--output-format", "json"]
    env = got["env"]
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["ANTHROPIC_AUTH_TOKEN"] == SECRET
    assert env["ANTHROPIC_MODEL"] == "qwen3-coder"
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "qwen3-coder"
    assert env["ANTHROPIC_DEFAULT_SONNET_MODEL"] == "qwen3-coder"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "qwen3-small"
    assert env["ANTHROPIC_SMALL_FAST_MODEL"] == "qwen3-small"
    # The user's own Anthropic key never reaches the hub, and nothing reroutes Claude Code past it.
    assert "ANTHROPIC_API_KEY" not in env
    assert "CLAUDE_CODE_USE_BEDROCK" not in env
    assert SECRET not in " ".join(got["argv"])
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"  # it talks to the hub only


def test_claude_keeps_the_users_own_choice_about_nonessential_traffic(launch: Launcher) -> None:
    env = {"POTLUCK_API_KEY": SECRET, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "0"}
    ran_tool(launch("claude", "--hub", "http://127.0.0.1:9", env=env))
    assert launch.received()["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "0"


def test_claude_small_model_defaults_to_model_and_without_model_the_tool_keeps_its_names(launch: Launcher) -> None:
    ran_tool(launch("claude", "--hub", "http://127.0.0.1:9", "--model", "qwen3-coder", env={"POTLUCK_API_KEY": SECRET}))
    env = launch.received()["env"]
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == env["ANTHROPIC_MODEL"] == "qwen3-coder"

    ran_tool(
        launch("claude", "--hub", "http://127.0.0.1:9", env={"POTLUCK_API_KEY": SECRET, "ANTHROPIC_MODEL": "mine"})
    )
    env = launch.received()["env"]
    assert env["ANTHROPIC_MODEL"] == "mine"  # the user's own choice stays
    for name in ("ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_SMALL_FAST_MODEL"):
        assert name not in env


def test_key_option_reaches_the_tool_only_through_its_environment(launch: Launcher) -> None:
    ran_tool(launch("claude", "--hub", "http://127.0.0.1:9", "--key", SECRET, "-p", "hi"))
    got = launch.received()
    assert got["env"]["ANTHROPIC_AUTH_TOKEN"] == SECRET
    assert got["argv"] == ["claude", "-p", "hi"]


# -- codex ----------------------------------------------------------------------------------------------


def overrides(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Codex's leading ``-c key=value`` pairs, each value parsed as TOML, and the arguments after them."""
    values: dict[str, Any] = {}
    rest = argv[1:]
    while rest[:1] == ["-c"]:
        name, _, value = rest[1].partition("=")
        values[name] = tomllib.loads(f"v = {value}")["v"]
        rest = rest[2:]
    return values, rest


def test_codex_gets_a_potluck_provider_on_its_command_line_and_the_key_in_its_environment(launch: Launcher) -> None:
    result = launch(
        "codex", "--hub", "http://127.0.0.1:9", "--model", "qwen3-coder", "exec", "--json", "fix it",
        env={"POTLUCK_API_KEY": SECRET},
    )  # fmt: skip
    ran_tool(result)
    got = launch.received()
    assert got["argv"][0] == "codex"
    values, rest = overrides(got["argv"])
    assert values == {
        "model_provider": "potluck",
        "model_providers.potluck.name": "Potluck",
        "model_providers.potluck.base_url": "http://127.0.0.1:9/v1",
        "model_providers.potluck.wire_api": "responses",
        "model_providers.potluck.env_key": "POTLUCK_API_KEY",
        "show_raw_agent_reasoning": True,
        "analytics.enabled": False,
        "feedback.enabled": False,
        "check_for_update_on_startup": False,
        "model": "qwen3-coder",
    }
    assert rest == ["exec", "--json", "fix it"]
    assert got["env"]["POTLUCK_API_KEY"] == SECRET
    assert SECRET not in " ".join(got["argv"])


def test_arguments_after_a_double_dash_all_go_to_the_tool(launch: Launcher) -> None:
    ran_tool(
        launch(
            "codex",
            "--hub",
            "http://127.0.0.1:9",
            "--",
            "--model",
            "theirs",
            "-c",
            "x=1",
            env={"POTLUCK_API_KEY": SECRET},
        )
    )
    values, rest = overrides(launch.received()["argv"])
    assert "model" not in values
    assert rest == ["--model", "theirs", "-c", "x=1"]


def test_unknown_options_before_the_tools_arguments_pass_through(launch: Launcher) -> None:
    ran_tool(
        launch(
            "codex",
            "--hub",
            "http://127.0.0.1:9",
            "-c",
            "analytics.enabled=false",
            "exec",
            "hi",
            env={"POTLUCK_API_KEY": SECRET},
        )
    )
    assert launch.received()["argv"][-4:] == ["-c", "analytics.enabled=false", "exec", "hi"]


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--hub", "hub.example:8642"), {"POTLUCK_API_KEY": SECRET}, "the URL needs a scheme"),
        (("--hub", "http://127.0.0.1:9", "--model", ""), {"POTLUCK_API_KEY": SECRET}, "is not a model name"),
        (("--hub", "http://127.0.0.1:9", "--model", " padded "), {"POTLUCK_API_KEY": SECRET}, "is not a model name"),
        (("--hub", "http://127.0.0.1:9", "--key", " "), {}, "the API key is empty"),
        ((), {"POTLUCK_API_KEY": SECRET}, "no hub"),
        (("--hub", "http://127.0.0.1:9"), {}, "no API key"),
    ],
)
@pytest.mark.parametrize("tool", ["claude", "codex"])
def test_bad_input_is_a_usage_error(
    launch: Launcher, tool: str, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = launch(tool, *args, env=env)
    assert result.code == 2, result.both
    assert message in result.err
    assert "Traceback" not in result.both
    assert not launch.record.exists()


@pytest.mark.parametrize(("tool", "package"), [("claude", "@anthropic-ai/claude-code"), ("codex", "@openai/codex")])
def test_a_missing_tool_says_how_to_install_it(launch: Launcher, tmp_path: Path, tool: str, package: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = launch(tool, "--hub", "http://127.0.0.1:9", env={"POTLUCK_API_KEY": SECRET}, path=str(empty))
    assert result.code == 1, result.both
    assert f"{tool} is not on PATH: install it with `npm install -g {package}`" in result.err
    assert "Traceback" not in result.both


def test_plain_http_off_this_machine_is_warned_about(launch: Launcher) -> None:
    result = launch("claude", "--hub", "http://hub.example:8642", env={"POTLUCK_API_KEY": SECRET})
    ran_tool(result)
    assert "http://hub.example:8642 is plain HTTP off this machine" in result.err


# -- the key made with the stored login -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("hub"))
    try:
        yield process
    finally:
        process.stop()


def models_status(hub: HubProcess, key: str) -> int:
    request = urllib.request.Request(hub.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_logged_in_user_gets_one_key_made_kept_and_replaced_once_revoked(hub: HubProcess, tmp_path: Path) -> None:
    outputs: list[Result] = []
    user = make_cli(tmp_path, "coder", outputs)
    name, password = unique("coder"), new_password()
    assert create_user(user, hub, name, password).code == 0
    assert login(user, hub, name, password).code == 0
    launch = Launcher(user, tmp_path / "coder")

    first = launch("claude", "-p", "hi")
    ran_tool(first)
    assert "created API key" in first.err
    key = launch.received()["env"]["ANTHROPIC_AUTH_TOKEN"]
    assert launch.received()["env"]["ANTHROPIC_BASE_URL"] == hub.url
    assert models_status(hub, key) == 200
    store = user.config_home / "potluck" / "tools.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600

    second = launch("codex", "exec", "hi")
    ran_tool(second)
    assert "created API key" not in second.err
    assert launch.received()["env"]["POTLUCK_API_KEY"] == key

    listed = user("key", "list")
    assert listed.out.count(KEY_NAME[:20]) == 1, listed.out

    key_id = json.loads(store.read_text())["key_id"]
    assert user("key", "revoke", key_id).code == 0
    third = launch("claude")
    ran_tool(third)
    assert "created API key" in third.err
    new_key = launch.received()["env"]["ANTHROPIC_AUTH_TOKEN"]
    assert new_key != key
    assert models_status(hub, new_key) == 200
