"""`potluck admin users|keys|agents` as subprocesses against a real hub: the ids an operator needs,
whole on one line at 80 columns too, matching what the admin API says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from potluck.cli.output import format_credits
from testing.processes import ADMIN_TOKEN, HubProcess
from tests.cli.test_cli_billing import account, grant, table_row
from tests.cli.test_cli_groups import Result
from tests.cli.test_cli_keys import created_key, enrolled_agent

pytestmark = pytest.mark.slow

ADMIN = {"POTLUCK_ADMIN_TOKEN": ADMIN_TOKEN}


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


def assert_whole(text: str, *ids: str) -> None:
    lines = text.splitlines()
    for value in ids:
        assert any(value in line for line in lines), f"{value} is broken in:\n{text}"


def test_admin_lists_users_keys_and_agents(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice, alice_id = account(hub, tmp_path, outputs, "alice")
    bob, bob_id = account(hub, tmp_path, outputs, "bob")
    assert grant(alice, hub, bob_id, "2.5", "--reason", "welcome").code == 0
    key_id, _ = created_key(alice("key", "create", "laptop"))
    revoked_id, _ = created_key(bob("key", "create", "old"))
    assert bob("key", "revoke", revoked_id).code == 0

    users = alice("admin", "users", "--hub", hub.url, env=ADMIN)
    assert users.code == 0, users.both
    status, api_users = hub.admin("GET", "/admin/users")
    assert status == 200, api_users
    by_id = {u["id"]: u for u in api_users["users"]}
    assert by_id[bob_id]["balance_micro"] == 2_500_000
    for user_id in (alice_id, bob_id):
        row = table_row(users.out, user_id)
        credits = format_credits(by_id[user_id]["balance_micro"])
        assert row[1:] == [by_id[user_id]["username"], "user", "—", "—", credits]
    assert table_row(users.out, bob_id)[-1] == "2.500000"
    assert any(table_row(users.out, u["id"])[1:3] == ["admin", "admin"] for u in api_users["users"])

    keys = alice("admin", "keys", "--hub", hub.url, env=ADMIN)
    assert keys.code == 0, keys.both
    live, old = table_row(keys.out, key_id), table_row(keys.out, revoked_id)
    assert live[1] == "laptop"
    assert live[4] == "—"
    assert old[1] == "old"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", old[4]), old

    model = "admin-listed-model"
    with enrolled_agent(hub, alice, tmp_path, model) as (agent_id, name):
        agents = alice("admin", "agents", "--hub", hub.url, env=ADMIN)
        assert agents.code == 0, agents.both
        row = table_row(agents.out, agent_id)
        assert row[1:5] == [name, "online", f"{model} (hot)", "0/8"], row
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row[5]), row
        narrow = alice("admin", "agents", "--hub", hub.url, env={**ADMIN, "COLUMNS": "80"})
        assert narrow.code == 0, narrow.both
        assert_whole(narrow.out, agent_id)

    # At 80 columns, every id is still whole on one line.
    for command, ids in (("users", (alice_id, bob_id)), ("keys", (key_id, revoked_id))):
        narrow = alice("admin", command, "--hub", hub.url, env={**ADMIN, "COLUMNS": "80"})
        assert narrow.code == 0, narrow.both
        assert_whole(narrow.out, *ids)


def test_admin_lists_need_the_admin_token(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli, _ = account(hub, tmp_path, outputs, "carol")
    user_token = json.loads(cli.config_file.read_text())["token"]
    for command in ("users", "keys", "agents"):
        missing = cli("admin", command, "--hub", hub.url)
        assert missing.code == 2, missing.both
        assert "--admin-token" in missing.err
        wrong = cli("admin", command, "--hub", hub.url, "--admin-token", user_token)
        assert wrong.code == 1, wrong.both
        assert wrong.err.startswith("Error: ")
        assert "Traceback" not in wrong.both
