"""`potluck requests` and `potluck admin requests` as subprocesses against a real hub, agent and backend.

Bob runs a credits group with his agent in it; Alice joined it, has credits and makes real requests.
Each user's listing holds exactly their own request ids (the ``x-request-id`` of each answer), newest
first, and each id fetches its receipt.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.processes import ADMIN_TOKEN, HubProcess
from tests.cli.test_cli_billing import account, grant, new_group
from tests.cli.test_cli_groups import Cli, Result, unique
from tests.cli.test_cli_keys import created_key, enrolled_agent

pytestmark = pytest.mark.slow

REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")
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


def chat(hub: HubProcess, key: str, model: str, prompt: str = "hello there") -> tuple[int, str]:
    """(status, request id) of one chat completion."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8})
    request = urllib.request.Request(
        hub.url + "/v1/chat/completions",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return int(resp.status), resp.headers["x-request-id"]
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["x-request-id"]


def listed_ids(result: Result) -> list[str]:
    assert result.code == 0, result.both
    return REQUEST_ID.findall(result.out.split("older:")[0])


def assert_whole(text: str, *ids: str) -> None:
    lines = text.splitlines()
    for value in ids:
        assert any(value in line for line in lines), f"{value} is broken in:\n{text}"


def test_each_user_lists_their_own_requests_and_fetches_their_receipts(
    hub: HubProcess, tmp_path: Path, outputs: list[Result]
) -> None:
    bob, bob_id = account(hub, tmp_path, outputs, "bob")
    alice, alice_id = account(hub, tmp_path, outputs, "alice")
    group_id = new_group(bob, "Market")
    billing = bob("group", "billing", group_id, "--mode", "credits", "--default-input", "1", "--default-output", "2")
    assert billing.code == 0, billing.both
    invited = bob("group", "invite", group_id)
    assert invited.code == 0, invited.both
    assert alice("group", "join", invited.out.strip().splitlines()[-1]).code == 0
    _, alice_key = created_key(alice("key", "create", "laptop", "--group", group_id))
    # Bob's key reaches only a group of his own in mutual billing: a request there needs no credits.
    _, bob_key = created_key(bob("key", "create", "own", "--group", new_group(bob, "Solo")))

    model = unique("served")
    with enrolled_agent(hub, bob, tmp_path, model) as (agent_id, _):
        assert bob("agent", "share", agent_id, group_id).code == 0
        granted = grant(bob, hub, alice_id, "1", "--reason", "test")
        assert granted.code == 0, granted.both
        made = []
        for _ in range(3):
            status, request_id = chat(hub, alice_key, model)
            assert status == 200, request_id
            made.append(request_id)
    status, bobs = chat(hub, bob_key, "ghost-model")
    assert status == 404

    # Alice sees exactly her three, newest first; Bob only his.
    mine = alice("requests")
    assert listed_ids(mine) == made[::-1]
    assert "Your requests" in mine.out
    row = next(line for line in mine.out.splitlines() if made[-1] in line)
    assert agent_id in row
    assert re.search(r"│ ok +│", row), row
    timings = re.search(r"│ +(\d+) ms │ +(\d+) ms │", row)  # time to first byte, then duration
    assert timings, row
    assert int(timings.group(1)) <= int(timings.group(2)), row
    assert re.search(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\b", row), row
    credits = re.findall(r"│ +(\d+\.\d{6}) │$", row)
    assert credits, row
    assert credits[0] != "0.000000", "a credits group charges"
    theirs = bob("requests")
    assert listed_ids(theirs) == [bobs]
    assert re.search(r"model_not_found \(404\)", theirs.out)

    # Paging: the hint is the exact command for the next page.
    first = alice("requests", "--limit", "2")
    assert listed_ids(first) == [made[2], made[1]]
    hint = re.search(r"^older: potluck requests --limit 2 --before (\S+)$", first.out, re.MULTILINE)
    assert hint is not None, first.out
    assert hint.group(1) == made[1]
    rest = alice("requests", "--limit", "2", "--before", hint.group(1))
    assert listed_ids(rest) == [made[0]]
    assert "older:" not in rest.out

    # Each listed id fetches its receipt.
    receipt = alice("receipt", "get", made[0])
    assert receipt.code == 0, receipt.both
    assert json.loads(receipt.out)["receipt"]["request_id"] == made[0]

    # At 80 columns every id is still whole on one line.
    narrow = alice("requests", env={"COLUMNS": "80"})
    assert narrow.code == 0, narrow.both
    assert_whole(narrow.out, *made, agent_id)

    # An admin lists anyone's; a user cannot page through someone else's ids.
    admin_view = alice("admin", "requests", bob_id, "--hub", hub.url, env=ADMIN)
    assert listed_ids(admin_view) == [bobs]
    assert f"Requests of {bob_id}" in admin_view.out
    foreign = alice("requests", "--before", bobs)
    assert foreign.code == 1, foreign.both
    assert "`before`" in foreign.err
    assert bobs not in foreign.out


def test_requests_bad_input_is_a_clean_error(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli, user_id = account(hub, tmp_path, outputs, "carol")
    empty = cli("requests")
    assert empty.code == 0, empty.both
    assert "no requests" in empty.out
    for args, code, message in (
        (("requests", "--limit", "0"), 2, "--limit"),
        (("requests", "--limit", "501"), 2, "--limit"),
        (("requests", "--before", "req_nope"), 1, "`before`"),
        (("admin", "requests", user_id, "--hub", hub.url), 2, "--admin-token"),
        (("admin", "requests", "usr_nobody", "--hub", hub.url, "--admin-token", ADMIN_TOKEN), 1, "No user usr_nobody"),
    ):
        result = cli(*args)
        assert result.code == code, result.both
        assert message in result.err
        assert "Traceback" not in result.both
    logged_out = Cli(tmp_path / "nobody")("requests", "--hub", hub.url)
    assert logged_out.code == 1
    assert "not logged in" in logged_out.err
