"""`potluck --version` from the package metadata, and `potluck completion bash|zsh|fish` driving click's completion."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import potluck
from potluck.cli.main import cli


def run_potluck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_version_is_the_installed_metadata_and_the_package_version() -> None:
    result = run_potluck("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"potluck, version {importlib.metadata.version('potluck')}\n"
    assert importlib.metadata.version("potluck") == potluck.__version__


@pytest.mark.parametrize(
    ("shell", "marks"),
    [
        ("bash", ["_potluck_completion() {", "_POTLUCK_COMPLETE=bash_complete", "complete -o nosort -F"]),
        ("zsh", ["#compdef potluck", "_POTLUCK_COMPLETE=zsh_complete"]),
        ("fish", ["_POTLUCK_COMPLETE=fish_complete", "complete --no-files --command potluck"]),
    ],
)
def test_completion_prints_the_script_for_each_shell(shell: str, marks: list[str]) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0, result.output
    for mark in marks:
        assert mark in result.output, f"{shell}: no {mark!r}"


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.output


@pytest.mark.parametrize(
    ("shell", "words", "cword", "expected"),
    [
        ("bash", "potluck ag", "1", {"plain,agent", "plain,agent-token"}),
        ("zsh", "potluck agent sc", "2", {"plain", "scan"}),
        ("fish", "potluck comp", "comp", {"plain,completion\tPrint the completion script for SHELL."}),
    ],
)
def test_the_completion_variable_makes_potluck_answer_candidates(
    shell: str, words: str, cword: str, expected: set[str]
) -> None:
    env = {"_POTLUCK_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": cword}
    result = run_potluck(**env)
    assert result.returncode == 0, result.stderr
    answered = set(result.stdout.splitlines())
    assert expected <= answered, answered


def test_bash_completes_potluck_subcommands_with_the_printed_script(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is missing")
    script = tmp_path / "potluck.bash"
    script.write_text(CliRunner().invoke(cli, ["completion", "bash"]).output)
    probe = (
        f"source {script}; COMP_WORDS=(potluck agent sc); COMP_CWORD=2; _potluck_completion potluck; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    result = subprocess.run(
        [bash, "-c", probe], env={**os.environ, "PATH": path}, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["scan", "schedule"]
