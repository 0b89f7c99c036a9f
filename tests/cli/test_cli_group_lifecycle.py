"""`potluck group invites|remove-member|delete` and `potluck invite revoke` as subprocesses against a real hub.

Each change is checked through the user API with the users' own tokens, not only in what the CLI prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.processes import HubProcess, http_json
from tests.cli.test_cli_billing import account, new_group, table_row
from tests.cli.test_cli_groups import Cli, Result

pytestmark = pytest.mark.slow


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


def api(hub: HubProcess, cli: Cli, method: str, path: str) -> tuple[int, Any]:
    """A user-API call with the token the CLI stored for this user."""
    token = json.loads(cli.config_file.read_text())["token"]
    status, body, _ = http_json(method, hub.url + path, token=token)
    return status, body


def invite(cli: Cli, group_id: str, *args: str) -> tuple[str, str]:
    """(invite id, code) of a new invite."""
    made = cli("group", "invite", group_id, *args)
    assert made.code == 0, made.both
    match = re.match(r"invite (\S+): ", made.out)
    assert match is not None, made.out
    return match.group(1), made.out.strip().splitlines()[-1]


def assert_clean_failure(result: Result, code: int, message: str) -> None:
    assert result.code == code, result.both
    assert message in result.err, result.err
    assert "Traceback" not in result.both


def test_invites_are_listed_and_a_revoked_code_stops_working(
    hub: HubProcess, tmp_path: Path, outputs: list[Result]
) -> None:
    alice, _ = account(hub, tmp_path, outputs, "alice")
    bob, _ = account(hub, tmp_path, outputs, "bob")
    group_id = new_group(alice, "Book club")
    first, first_code = invite(alice, group_id, "--max-uses", "2")
    second, second_code = invite(alice, group_id)

    listed = alice("group", "invites", group_id)
    assert listed.code == 0, listed.both
    row = table_row(listed.out, first)
    assert (row[1], row[3]) == ("0/2", "active")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row[2]), row
    assert table_row(listed.out, second)[1::2] == ["0/1", "active"]
    assert first_code not in listed.out
    assert second_code not in listed.out

    revoked = alice("invite", "revoke", group_id, first)
    assert revoked.code == 0, revoked.both
    assert revoked.out == f"revoked invite {first} of group {group_id}\n"
    status, body = api(hub, alice, "GET", f"/api/groups/{group_id}/invites")
    assert status == 200, body
    assert {i["id"]: i["revoked"] for i in body["invites"]} == {first: True, second: False}
    assert_clean_failure(bob("group", "join", first_code), 1, "not valid")

    joined = bob("group", "join", second_code)
    assert joined.code == 0, joined.both
    # At 80 columns too, one row per invite with its id whole.
    states = alice("group", "invites", group_id, env={"COLUMNS": "80"})
    assert states.code == 0, states.both
    assert table_row(states.out, first)[3] == "revoked"
    assert table_row(states.out, second)[1::2] == ["1/1", "used up"]

    # A member may not list or revoke; an unknown invite is the hub's 404; a bad group, too.
    assert_clean_failure(bob("group", "invites", group_id), 1, "does not allow this")
    assert_clean_failure(bob("invite", "revoke", group_id, second), 1, "does not allow this")
    assert_clean_failure(alice("invite", "revoke", group_id, "inv_nope"), 1, "No invite inv_nope")
    assert_clean_failure(alice("invite", "revoke", group_id), 2, "Missing argument 'INVITE_ID'")


def test_an_owner_removes_a_member(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice, alice_id = account(hub, tmp_path, outputs, "alice")
    bob, bob_id = account(hub, tmp_path, outputs, "bob")
    group_id = new_group(alice, "Lab")
    _, code = invite(alice, group_id)
    assert bob("group", "join", code).code == 0

    removed = alice("group", "remove-member", group_id, bob_id)
    assert removed.code == 0, removed.both
    assert removed.out == f"removed {bob_id} from group {group_id}\n"
    status, body = api(hub, alice, "GET", f"/api/groups/{group_id}/members")
    assert status == 200, body
    assert [m["user_id"] for m in body["members"]] == [alice_id]
    assert api(hub, bob, "GET", f"/api/groups/{group_id}/members")[0] == 404

    assert_clean_failure(alice("group", "remove-member", group_id, alice_id), 1, "owner cannot be removed")
    assert_clean_failure(alice("group", "remove-member", group_id, bob_id), 1, f"No member {bob_id}")
    assert_clean_failure(bob("group", "remove-member", group_id, alice_id), 1, f"No group {group_id}")


def test_only_the_owner_deletes_a_group_and_only_when_sure(
    hub: HubProcess, tmp_path: Path, outputs: list[Result]
) -> None:
    alice, _ = account(hub, tmp_path, outputs, "alice")
    bob, _ = account(hub, tmp_path, outputs, "bob")
    group_id = new_group(alice, "Short-lived")
    _, code = invite(alice, group_id)
    assert bob("group", "join", code).code == 0

    assert_clean_failure(bob("group", "delete", group_id, "--yes"), 1, "does not allow this")
    declined = alice("group", "delete", group_id, stdin="n\n")
    assert declined.code == 1, declined.both
    assert f"Delete group {group_id} for every member?" in declined.out
    assert "Aborted" in declined.err
    assert api(hub, alice, "GET", f"/api/groups/{group_id}")[0] == 200

    deleted = alice("group", "delete", group_id, stdin="y\n")
    assert deleted.code == 0, deleted.both
    assert deleted.out.endswith(f"deleted group {group_id}\n")
    for user in (alice, bob):
        status, body = api(hub, user, "GET", "/api/groups")
        assert status == 200, body
        assert group_id not in [g["id"] for g in body["groups"]]
        assert api(hub, user, "GET", f"/api/groups/{group_id}")[0] == 404
    assert_clean_failure(alice("group", "delete", group_id, "--yes"), 1, f"No group {group_id}")
