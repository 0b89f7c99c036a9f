"""`--token-file`: the enrolment token read from a file only its owner can read, never from a command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from potluck.agent.settings import AgentSettings
from potluck.cli.main import cli


def token_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_token_is_the_files_first_line(tmp_path: Path) -> None:
    settings = AgentSettings(hub_url="http://127.0.0.1:1", token_file=token_file(tmp_path, "  pat-abc \nrest\n"))
    assert settings.with_token_from_file().token == "pat-abc"


def test_without_a_file_the_settings_are_unchanged() -> None:
    settings = AgentSettings(hub_url="http://127.0.0.1:1", token="pat-x")
    assert settings.with_token_from_file() is settings


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    settings = AgentSettings(hub_url="http://127.0.0.1:1", token_file=token_file(tmp_path, "pat-abc\n", mode))
    with pytest.raises(ValueError, match=f"may be read by others \\(mode {mode:04o}\\): chmod 600"):
        settings.with_token_from_file()


@pytest.mark.parametrize(("text", "error"), [("\n", "is empty"), (None, "No such file")])
def test_an_empty_or_missing_file_is_refused(tmp_path: Path, text: str | None, error: str) -> None:
    path = token_file(tmp_path, text) if text is not None else tmp_path / "missing"
    with pytest.raises(ValueError, match=error):
        AgentSettings(hub_url="http://127.0.0.1:1", token_file=path).with_token_from_file()


def test_token_and_token_file_together_are_a_usage_error(tmp_path: Path) -> None:
    path = token_file(tmp_path, "pat-abc\n")
    args = ["agent", "--hub", "http://127.0.0.1:1", "--token", "pat-x", "--token-file", str(path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "give --token or --token-file, not both" in result.output


def test_a_readable_token_file_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    path = token_file(tmp_path, "pat-abc\n", 0o644)
    result = CliRunner().invoke(cli, ["agent", "--hub", "http://127.0.0.1:1", "--token-file", str(path)])
    assert result.exit_code == 2
    assert "chmod 600" in result.output


def test_the_variable_names_the_file(tmp_path: Path) -> None:
    path = token_file(tmp_path, "pat-abc\n", 0o644)
    result = CliRunner().invoke(
        cli, ["agent", "--hub", "http://127.0.0.1:1"], env={"POTLUCK_AGENT_TOKEN_FILE": str(path)}
    )
    assert result.exit_code == 2
    assert str(path) in result.output
