"""`potluck key ...`, `potluck agent-token create` and `potluck agent list|share|unshare` against a real hub.

The commands run as subprocesses (the `Cli` helper of test_cli_groups.py), each user with its own
``XDG_CONFIG_HOME``. Secrets (API keys, agent tokens) are looked for where they must not appear.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testing.fake_backend import FakeBackend
from testing.processes import HubProcess
from testing.serving import BackgroundServer
from tests.cli.test_cli_groups import Cli, Result, create_user, login, make_cli, new_password, unique


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


def logged_in(hub: HubProcess, tmp_path: Path, outputs: list[Result], name: str) -> Cli:
    """A new account, logged in through the CLI."""
    cli = make_cli(tmp_path, name, outputs)
    username, password = unique(name), new_password()
    created = create_user(cli, hub, username, password)
    assert created.code == 0, created.both
    result = login(cli, hub, username, password)
    assert result.code == 0, result.both
    return cli


@contextlib.contextmanager
def enrolled_agent(hub: HubProcess, user: Cli, tmp_path: Path, model: str) -> Iterator[tuple[str, str]]:
    """Run the exact command line `potluck agent-token create` prints, against a fake backend serving
    ``model``; yield the enrolled agent's id and name, and stop it afterwards."""
    token = user("agent-token", "create", "gpu-box")
    assert token.code == 0, token.both
    command = shlex.split(token.out.strip().splitlines()[-1])
    assert command[:2] == ["potluck", "agent"]
    name = unique("gpu-box")
    with BackgroundServer(FakeBackend([model]).make_app()) as backend, (tmp_path / "agent.log").open("w") as log:
        # `potluck agent --hub URL --token T` with no subcommand runs the daemon.
        agent = subprocess.Popen(
            [sys.executable, "-m", *command, "--backend", backend.url, "--name", name,
             "--data-dir", str(tmp_path / "agent")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield str(hub.wait_agent(name, models={model})["id"]), name
        finally:
            agent.terminate()
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(5)


def models_status(hub: HubProcess, key: str) -> int:
    """The status of ``GET /v1/models`` with an API key."""
    request = urllib.request.Request(hub.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def created_key(result: Result) -> tuple[str, str]:
    """(key id, secret) from the output of `potluck key create`."""
    assert result.code == 0, result.both
    match = re.search(r"^created key .*: (\S+) \(groups: .*\)$", result.out, re.MULTILINE)
    assert match is not None, result.out
    lines = result.out.strip().splitlines()
    assert lines[-2] == "key (shown once; the hub keeps only its hash):"
    secret = lines[-1]
    assert secret.startswith("pk-"), secret
    assert result.out.count(secret) == 1, "the key is printed once"
    return match.group(1), secret


def test_keys_and_agent_tokens_through_the_cli(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice = logged_in(hub, tmp_path, outputs, "alice")

    made = alice("group", "create", "Lab")
    assert made.code == 0, made.both
    match = re.search(r"created group Lab: (grp_\w+)", made.out)
    assert match is not None, made.out
    group_id = match.group(1)

    scoped = alice("key", "create", "laptop", "--group", group_id)
    scoped_id, scoped_key = created_key(scoped)
    assert f"(groups: {group_id})" in scoped.out
    unscoped = alice("key", "create", "everywhere")
    unscoped_id, unscoped_key = created_key(unscoped)
    assert "(groups: all)" in unscoped.out
    assert scoped_id != unscoped_id

    listed = alice("key", "list")
    assert listed.code == 0, listed.both
    assert "Your API keys" in listed.out
    for key_id, name in ((scoped_id, "laptop"), (unscoped_id, "everywhere")):
        assert re.search(rf"{re.escape(key_id)}\s.*{name}", listed.out), listed.out
    assert re.search(rf"laptop\s.*{re.escape(group_id)}", listed.out)
    assert re.search(r"everywhere\s.*\ball\b", listed.out)
    assert scoped_key[:10] in listed.out, "the display prefix is shown"

    # Both keys work; a revoked one gets 401 from the next request on.
    assert models_status(hub, scoped_key) == 200
    assert models_status(hub, unscoped_key) == 200
    revoked = alice("key", "revoke", scoped_id)
    assert revoked.code == 0, revoked.both
    assert revoked.out == f"revoked key {scoped_id}\n"
    assert models_status(hub, scoped_key) == 401
    assert models_status(hub, unscoped_key) == 200

    after = alice("key", "list")
    assert after.code == 0, after.both
    revoked_row = next(line for line in after.out.splitlines() if scoped_id in line)
    timestamp = r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"  # UTC, to the second
    assert len(re.findall(timestamp, revoked_row)) == 2, "created and revoked"
    live_row = next(line for line in after.out.splitlines() if unscoped_id in line)
    assert len(re.findall(timestamp, live_row)) == 1
    assert re.search(r"│ — +│$", live_row), "not revoked"

    # Another user's key cannot be revoked (it does not exist for them).
    bob = logged_in(hub, tmp_path, outputs, "bob")
    foreign = bob("key", "revoke", unscoped_id)
    assert foreign.code == 1
    assert foreign.err == f"Error: No key {unscoped_id}\n"
    assert models_status(hub, unscoped_key) == 200
    bob_keys = bob("key", "list")
    assert bob_keys.code == 0, bob_keys.both
    assert unscoped_id not in bob_keys.out
    assert "no keys yet" in bob_keys.out

    token = alice("agent-token", "create", "gpu-box")
    assert token.code == 0, token.both
    lines = token.out.strip().splitlines()
    assert re.match(r"agent token \S+ for gpu-box \(one enrolment; shown once\):$", lines[0]), lines[0]
    agent_token = lines[1]
    assert agent_token.startswith("pat-"), agent_token
    assert lines[2] == "run on the GPU machine:"
    assert lines[3] == f"potluck agent --hub {hub.url} --token {agent_token}"

    agents = alice("agent", "list")
    assert agents.code == 0, agents.both
    assert "Your agents" in agents.out
    assert "no agents yet" in agents.out

    unknown = alice("agent", "share", "agt_nope", group_id)
    assert unknown.code == 1
    assert unknown.err == "Error: No agent agt_nope\n"
    unknown = alice("agent", "unshare", "agt_nope", group_id)
    assert unknown.code == 1
    assert unknown.err == "Error: No agent agt_nope\n"

    # No secret ever shows up in a listing.
    for result in (listed, after, agents, bob_keys):
        for secret in (scoped_key, unscoped_key, agent_token):
            assert secret not in result.both


def test_the_printed_command_enrols_an_agent_that_can_be_shared(
    hub: HubProcess, tmp_path: Path, outputs: list[Result]
) -> None:
    alice = logged_in(hub, tmp_path, outputs, "alice")
    made = alice("group", "create", "Lab")
    match = re.search(r"created group Lab: (grp_\w+)", made.out)
    assert match is not None, made.both
    group_id = match.group(1)

    model = unique("cli-model")
    with enrolled_agent(hub, alice, tmp_path, model) as (agent_id, name):
        listed = alice("agent", "list")
        assert listed.code == 0, listed.both
        row = next((line for line in listed.out.splitlines() if agent_id in line), None)
        assert row is not None, listed.out
        assert name in row
        assert re.search(r"│ online +│", row), row  # the same words as /admin/agents
        assert f"{model} (hot)" in row

        shared = alice("agent", "share", agent_id, group_id)
        assert shared.code == 0, shared.both
        assert shared.out == f"shared agent {agent_id} into group {group_id}\n"
        listed = alice("agent", "list")
        row = next(line for line in listed.out.splitlines() if agent_id in line)
        assert group_id in row

        # Someone else cannot list, share or unshare it.
        bob = logged_in(hub, tmp_path, outputs, "bob")
        assert agent_id not in bob("agent", "list").out
        foreign = bob("agent", "unshare", agent_id, group_id)
        assert foreign.code == 1
        assert foreign.err == f"Error: No agent {agent_id}\n"

        unshared = alice("agent", "unshare", agent_id, group_id)
        assert unshared.code == 0, unshared.both
        assert unshared.out == f"stopped sharing agent {agent_id} into group {group_id}\n"
        again = alice("agent", "unshare", agent_id, group_id)
        assert again.code == 1
        assert again.err.startswith("Error: ")
        listed = alice("agent", "list")
        row = next(line for line in listed.out.splitlines() if agent_id in line)
        assert group_id not in row


def test_agent_subcommands_use_the_stored_login(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli = make_cli(tmp_path, "nobody", outputs)
    # No login, no hub: the user-API subcommands ask for one; the daemon's own options are not needed.
    for args in (("agent", "list"), ("key", "list"), ("agent-token", "create", "x")):
        no_hub = cli(*args)
        assert no_hub.code == 2, no_hub.both
        assert "--hub" in no_hub.err
        not_logged_in = cli(*args, "--hub", hub.url)
        assert not_logged_in.code == 1, not_logged_in.both
        assert f"not logged in to {hub.url}" in not_logged_in.err
    # A bad daemon setting in the environment does not get in the way of `agent list`.
    bad_env = cli("agent", "list", "--hub", hub.url, env={"POTLUCK_AGENT_SCAN_PORTS": "nope"})
    assert bad_env.code == 1
    assert "not logged in" in bad_env.err
    # The daemon without --hub is still a usage error, and `agent scan` still runs.
    daemon = cli("agent")
    assert daemon.code == 2
    assert "--hub is required" in daemon.err
    scan = cli("agent", "--scan-ports", "9", "scan")
    assert scan.code == 0, scan.both
    assert "Local LLM backends" in scan.out
    bad_ports = cli("agent", "--scan-ports", "nope", "scan")
    assert bad_ports.code == 2


def chat_status(hub: HubProcess, key: str, model: str) -> int:
    """The status of one chat completion with an API key."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        hub.url + "/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def test_key_limits_reach_the_hub(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice = logged_in(hub, tmp_path, outputs, "alice")
    made = alice(
        "key", "create", "limited", "--rpm", "1", "--tpm", "5000", "--max-concurrency", "2",
        "--models", "m-one,m-two", "--models", "m-three", "--expires", "30d", "--priority", "3", "--prefer-own",
    )  # fmt: skip
    _, key = created_key(made)
    match = re.search(
        r"^limits: models m-one, m-two, m-three; expires (\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ); rpm 1; tpm 5000;"
        r" max concurrency 2; priority 3; prefers your own agents$",
        made.out,
        re.MULTILINE,
    )
    assert match is not None, made.out
    expires = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)

    # The hub enforces them: a model off the allow-list is refused, and one request a minute passes.
    assert chat_status(hub, key, "m-four") == 403
    assert chat_status(hub, key, "m-one") == 404  # allowed, but no agent serves it
    assert chat_status(hub, key, "m-two") == 429

    # A date is sent as a lifetime from now: the hub's expiry is that time, give or take the call.
    when = (datetime.now(UTC) + timedelta(days=400)).replace(second=0, microsecond=0)
    until = alice("key", "create", "dated", "--expires", when.strftime("%Y-%m-%dT%H:%M"))
    created_key(until)
    match = re.search(r"^limits: expires (\S+ \S+)$", until.out, re.MULTILINE)
    assert match is not None, until.out
    expires = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires - when) < timedelta(seconds=5)
    plain = alice("key", "create", "plain")
    created_key(plain)
    assert "limits:" not in plain.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rpm", "0"), "--rpm"),
        (("--tpm", "lots"), "--tpm"),
        (("--max-concurrency", "1000001"), "--max-concurrency"),
        (("--rpm", "1000000001"), "--rpm"),
        (("--priority", "101"), "--priority"),
        (("--models", "a,,b"), "empty model name"),
        (("--expires", "soon"), "neither a duration"),
        (("--expires", "2001-01-01"), "not in the future"),
        (("--expires", "0"), "--expires"),
        (("--expires", "3651d"), "more than 3650 days away"),
    ],
)
def test_bad_key_limits_are_usage_errors(
    hub: HubProcess, tmp_path: Path, outputs: list[Result], args: tuple[str, ...], message: str
) -> None:
    cli = make_cli(tmp_path, "nobody", outputs)
    result = cli("key", "create", "k", "--hub", hub.url, *args)
    assert result.code == 2, result.both
    assert message in result.err
    assert "Traceback" not in result.both
