"""`potluck agent pause|resume|schedule`: the window parser, and the commands against a real hub.

The end-to-end test enrols a real agent (the command line printed by `potluck agent-token create`,
in front of a fake backend) and drives its owner controls through the CLI, as subprocesses (the
`Cli` helper of test_cli_groups.py), each user with its own ``XDG_CONFIG_HOME``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from potluck.cli.main import cli
from potluck.cli.schedule import local_timezone, parse_window
from testing.processes import HubProcess
from tests.cli.test_cli_groups import Cli, Result, unique
from tests.cli.test_cli_keys import enrolled_agent, logged_in

WEEKDAYS = [0, 1, 2, 3, 4]
EVERY_DAY = [0, 1, 2, 3, 4, 5, 6]


# -- the window parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days", "start", "end"),
    [
        ("mon-fri 18:00-08:00", WEEKDAYS, "18:00", "08:00"),
        ("sat,sun 00:00-23:59", [5, 6], "00:00", "23:59"),
        ("daily 09:00-17:00", EVERY_DAY, "09:00", "17:00"),
        ("weekdays 9:00-17:30", WEEKDAYS, "09:00", "17:30"),
        ("weekends 10:00-12:00", [5, 6], "10:00", "12:00"),
        ("Mon,WED-fri 01:00-02:00", [0, 2, 3, 4], "01:00", "02:00"),
        ("fri-mon 22:00-06:00", [0, 4, 5, 6], "22:00", "06:00"),  # a day range wraps over the week end
        ("sunday,monday 07:00 - 08:00", [0, 6], "07:00", "08:00"),
        ("  tue   12:00-13:00  ", [1], "12:00", "13:00"),
        ("mon,mon-tue 12:00-13:00", [0, 1], "12:00", "13:00"),
    ],
)
def test_window_specs_become_the_hubs_json(spec: str, days: list[int], start: str, end: str) -> None:
    assert parse_window(spec) == {"days": days, "start": start, "end": end}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "'' is not a window: expected 'DAYS HH:MM-HH:MM', e.g. 'mon-fri 18:00-08:00'"),
        ("mon-fri", "'mon-fri' is not a window: expected 'DAYS HH:MM-HH:MM'"),
        ("18:00-08:00", "'18:00-08:00' is not a window: expected 'DAYS HH:MM-HH:MM'"),
        ("mon 8-9", "'mon 8-9' is not a window"),
        ("mon 08:00-09:00 extra", "is not a window"),
        ("mon-fry 18:00-08:00", "'mon-fry 18:00-08:00': unknown day 'fry' (mon, tue, wed, thu, fri, sat, sun;"),
        ("someday 18:00-08:00", "unknown day 'someday'"),
        ("mon,,tue 08:00-09:00", "'mon,,tue 08:00-09:00': empty day in 'mon,,tue'"),
        ("mon 25:00-08:00", "'mon 25:00-08:00': 25:00 is not a time of day (HH:MM, 00:00 to 23:59)"),
        ("mon 08:00-24:00", "24:00 is not a time of day"),
        ("mon 08:60-09:00", "08:60 is not a time of day"),
        ("mon 08:00-8:00", "'mon 08:00-8:00': the window starts and ends at 08:00, so it is empty"),
    ],
)
def test_bad_window_specs_are_bad_parameters(spec: str, message: str) -> None:
    with pytest.raises(click.BadParameter) as caught:
        parse_window(spec)
    assert message in caught.value.message


def test_a_bad_window_is_a_usage_error_before_any_call() -> None:
    result = CliRunner().invoke(cli, ["agent", "schedule", "agt_x", "--window", "mon-fry 18:00-08:00"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--window': 'mon-fry 18:00-08:00': unknown day 'fry'" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to change"),
        (("--always", "--window", "daily 09:00-17:00"), "--always cannot be combined with --window or --tz"),
        (("--always", "--tz", "UTC"), "--always cannot be combined"),
        (("--tz", "Europe/Berlin"), "--tz needs at least one --window"),
    ],
)
def test_schedule_option_conflicts_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["agent", "schedule", "agt_x", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert local_timezone() == "Asia/Tokyo"
    monkeypatch.setenv("TZ", ":/usr/share/zoneinfo/America/New_York")
    assert local_timezone() == "America/New_York"
    monkeypatch.delenv("TZ")
    assert local_timezone()  # this machine's zone, or UTC: never empty


# -- against a real hub -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("hub"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def outputs() -> list[Result]:
    return []


def controls(result: Result, agent_id: str) -> dict[str, str]:
    """The rows of the controls table: ``{"paused": "yes", ...}``, after its ``<verb> agent <id>`` line."""
    assert result.code == 0, result.both
    assert re.match(rf"(paused|resumed|updated) agent {re.escape(agent_id)}\n", result.out), result.out
    assert "Owner controls" in result.out
    rows = {}
    for line in result.out.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0] in ("paused", "own requests only", "own requests first", "schedule"):
            rows[cells[0]] = cells[1]
    assert len(rows) == 4, result.out
    return rows


def test_owner_controls_through_the_cli(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice = logged_in(hub, tmp_path, outputs, "alice")
    with enrolled_agent(hub, alice, tmp_path, unique("controls-model")) as (agent_id, _name):
        check_controls(hub, alice, agent_id, tmp_path, outputs)


def check_controls(hub: HubProcess, alice: Cli, agent_id: str, tmp_path: Path, outputs: list[Result]) -> None:
    paused = alice("agent", "pause", agent_id)
    assert paused.out.startswith(f"paused agent {agent_id}\n"), paused.both
    assert controls(paused, agent_id) == {
        "paused": "yes",
        "own requests only": "no",
        "own requests first": "no",
        "schedule": "always",
    }

    resumed = alice("agent", "resume", agent_id)
    assert resumed.out.startswith(f"resumed agent {agent_id}\n"), resumed.both
    assert controls(resumed, agent_id)["paused"] == "no"

    scheduled = alice(
        "agent", "schedule", agent_id, "--tz", "Europe/Berlin",
        "--window", "mon-fri 18:00-08:00", "--window", "sat,sun 00:00-23:59", "--own-only",
    )  # fmt: skip
    assert scheduled.out.startswith(f"updated agent {agent_id}\n"), scheduled.both
    assert controls(scheduled, agent_id) == {
        "paused": "no",
        "own requests only": "yes",
        "own requests first": "no",
        "schedule": "Europe/Berlin: mon-fri 18:00-08:00; sat,sun 00:00-23:59",
    }

    # Only what is given changes: pausing keeps the schedule and --own-only.
    kept = controls(alice("agent", "pause", agent_id), agent_id)
    assert kept["paused"] == "yes"
    assert kept["own requests only"] == "yes"
    assert kept["schedule"].startswith("Europe/Berlin: ")
    alice("agent", "resume", agent_id)

    # Without --tz the windows are in this machine's zone ($TZ here).
    local = alice("agent", "schedule", agent_id, "--window", "daily 09:00-17:00", env={"TZ": "Asia/Tokyo"})
    assert controls(local, agent_id)["schedule"] == "Asia/Tokyo: daily 09:00-17:00"

    always = alice("agent", "schedule", agent_id, "--always", "--no-own-only", "--own-first")
    assert controls(always, agent_id) == {
        "paused": "no",
        "own requests only": "no",
        "own requests first": "yes",
        "schedule": "always",
    }

    # The hub checks the time zone; its message is printed as is.
    bad_zone = alice("agent", "schedule", agent_id, "--tz", "Nowhere/Atlantis", "--window", "daily 09:00-17:00")
    assert bad_zone.code == 1, bad_zone.both
    assert bad_zone.err == "Error: Unknown time zone 'Nowhere/Atlantis'\n"
    assert bad_zone.out == ""
    unchanged = controls(alice("agent", "schedule", agent_id, "--own-first"), agent_id)
    assert unchanged["schedule"] == "always"

    bad_window = alice("agent", "schedule", agent_id, "--window", "mon 25:00-08:00")
    assert bad_window.code == 2, bad_window.both
    assert "Invalid value for '--window': 'mon 25:00-08:00': 25:00 is not a time of day" in bad_window.err

    # Unknown agents, and someone else's, answer the same; neither changes anything.
    for command in ("pause", "resume"):
        unknown = alice("agent", command, "agt_nope")
        assert unknown.code == 1
        assert unknown.err == "Error: No agent agt_nope\n"
    bob = logged_in(hub, tmp_path, outputs, "bob")
    for args in (("pause", agent_id), ("schedule", agent_id, "--always")):
        foreign = bob("agent", *args)
        assert foreign.code == 1, foreign.both
        assert foreign.err == f"Error: No agent {agent_id}\n"
    assert controls(alice("agent", "resume", agent_id), agent_id)["paused"] == "no"

    # No login: the stored-login rules of the other agent subcommands.
    nobody = Cli(tmp_path / "nobody", seen=outputs)
    no_hub = nobody("agent", "pause", agent_id)
    assert no_hub.code == 2, no_hub.both
    assert "--hub" in no_hub.err
    not_logged_in = nobody("agent", "schedule", agent_id, "--always", "--hub", hub.url)
    assert not_logged_in.code == 1, not_logged_in.both
    assert f"not logged in to {hub.url}" in not_logged_in.err
    assert re.search(r"\bTraceback\b", "".join(r.both for r in outputs)) is None
