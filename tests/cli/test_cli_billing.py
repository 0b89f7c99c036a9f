"""`potluck balance|usage|earnings`, `group billing|prices`, `agent prices|set-price`, `receipt get|key`
and `admin grant-credits` as subprocesses against one real hub per module.

A settled request (and so a receipt and non-empty reports) needs an agent serving traffic; that
flow is tested end to end elsewhere. Here each command runs against the real API, and a real agent
is enrolled only to price its model.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.processes import ADMIN_TOKEN, HubProcess, http_json
from tests.cli.test_cli_groups import Cli, Result, create_user, login, make_cli, new_password, unique
from tests.cli.test_cli_keys import enrolled_agent


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


def account(hub: HubProcess, tmp_path: Path, outputs: list[Result], name: str) -> tuple[Cli, str]:
    """A new account, logged in through the CLI: (its CLI, its user id)."""
    cli = make_cli(tmp_path, name, outputs)
    username, password = unique(name), new_password()
    created = create_user(cli, hub, username, password)
    assert created.code == 0, created.both
    match = re.search(r": (usr_\w+)$", created.out.strip())
    assert match is not None, created.out
    logged = login(cli, hub, username, password)
    assert logged.code == 0, logged.both
    return cli, match.group(1)


def new_group(cli: Cli, name: str) -> str:
    made = cli("group", "create", name)
    assert made.code == 0, made.both
    match = re.search(r": (grp_\w+)$", made.out.strip())
    assert match is not None, made.out
    return match.group(1)


def table_row(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{out}")


def grant(cli: Cli, hub: HubProcess, *args: str) -> Result:
    return cli("admin", "grant-credits", *args, "--hub", hub.url, env={"POTLUCK_ADMIN_TOKEN": ADMIN_TOKEN})


def test_granted_credits_show_in_the_balance(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice, alice_id = account(hub, tmp_path, outputs, "alice")

    before = alice("balance")
    assert before.code == 0, before.both
    assert table_row(before.out, "balance") == ["balance", "0.000000"]
    assert table_row(before.out, "held") == ["held", "0.000000"]

    granted = grant(alice, hub, alice_id, "12.5", "--reason", "welcome")
    assert granted.code == 0, granted.both
    assert re.search(rf"granted 12\.500000 credits to {alice_id} \(\S+\); balance now 12\.500000 credits", granted.out)
    again = grant(alice, hub, alice_id, "0.000001", "--reason", "rounding")
    assert again.code == 0, again.both
    assert "balance now 12.500001 credits" in again.out

    after = alice("balance")
    assert after.code == 0, after.both
    assert table_row(after.out, "balance") == ["balance", "12.500001"]
    assert table_row(after.out, "held") == ["held", "0.000000"]


def test_grant_credits_errors(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli, user_id = account(hub, tmp_path, outputs, "bob")
    no_token = cli("admin", "grant-credits", user_id, "5", "--reason", "x", "--hub", hub.url)
    assert no_token.code == 2
    assert "--admin-token" in no_token.err
    no_reason = grant(cli, hub, user_id, "5")
    assert no_reason.code == 2
    assert "--reason" in no_reason.err
    # A user's own session token is not the admin token.
    user_token = json.loads(cli.config_file.read_text())["token"]
    as_user = cli("admin", "grant-credits", user_id, "5", "--reason", "x", "--admin-token", user_token)
    assert as_user.code == 1
    assert as_user.err.startswith("Error: ")
    unknown = grant(cli, hub, "usr_nobody", "5", "--reason", "x")
    assert unknown.code == 1
    assert "No user usr_nobody" in unknown.err
    negative = cli(
        "admin", "grant-credits", "--reason", "x", "--hub", hub.url, "--", user_id, "-5",
        env={"POTLUCK_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert negative.code == 1
    assert "Expected `float` > 0.0 - at `$.amount`" in negative.err
    zero = grant(cli, hub, user_id, "0", "--reason", "x")
    assert zero.code == 1
    assert "Expected `float` > 0.0 - at `$.amount`" in zero.err


def test_group_billing_changes_only_the_options_given(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    owner, _ = account(hub, tmp_path, outputs, "carol")
    group_id = new_group(owner, "Paid")

    shown = owner("group", "billing", group_id)
    assert shown.code == 0, shown.both
    assert "updated group" not in shown.out
    assert table_row(shown.out, "billing")[1] == "mutual"
    assert table_row(shown.out, "dynamic pricing")[1] == "no"

    changed = owner("group", "billing", group_id, "--mode", "credits", "--default-input", "1", "--default-output", "2")
    assert changed.code == 0, changed.both
    assert f"updated group {group_id}" in changed.out
    assert table_row(changed.out, "billing")[1] == "credits"
    assert table_row(changed.out, "default input")[1] == "1 credits per million tokens"
    assert table_row(changed.out, "default output")[1] == "2 credits per million tokens"

    bounded = owner(
        "group", "billing", group_id, "--dynamic", "--min-price", "0.5", "--max-price", "10", "--max-tokens-cap", "512"
    )
    assert bounded.code == 0, bounded.both
    # The hub has no GET for one group: an empty PATCH answers what it now holds.
    again = owner("group", "billing", group_id)
    assert again.code == 0, again.both
    assert table_row(again.out, "billing")[1] == "credits"
    assert table_row(again.out, "dynamic pricing")[1] == "yes"
    assert table_row(again.out, "min price")[1] == "0.5 credits per million tokens"
    assert table_row(again.out, "max price")[1] == "10 credits per million tokens"
    assert table_row(again.out, "default input")[1] == "1 credits per million tokens"
    assert table_row(again.out, "max tokens cap")[1].startswith("512 ")

    cleared = owner("group", "billing", group_id, "--min-price", "none", "--no-dynamic")
    assert cleared.code == 0, cleared.both
    assert table_row(cleared.out, "min price")[1] == "none"
    assert table_row(cleared.out, "max price")[1] == "10 credits per million tokens"
    assert table_row(cleared.out, "dynamic pricing")[1] == "no"

    bad_bound = owner("group", "billing", group_id, "--max-price", "cheap")
    assert bad_bound.code == 2
    assert "--max-price" in bad_bound.err
    inverted = owner("group", "billing", group_id, "--min-price", "20")
    assert inverted.code == 1
    assert inverted.err.startswith("Error: ")

    # Billing is the owner's: a member is refused, an outsider sees no group.
    stranger, _ = account(hub, tmp_path, outputs, "dave")
    hidden = stranger("group", "billing", group_id, "--mode", "mutual")
    assert hidden.code == 1
    assert f"No group {group_id}" in hidden.err
    prices = stranger("group", "prices", group_id)
    assert prices.code == 1
    assert f"No group {group_id}" in prices.err

    empty = owner("group", "prices", group_id)
    assert empty.code == 0, empty.both
    assert "billing: credits;" in empty.out
    assert "no connected agent serves this group" in empty.out


def test_empty_reports_print_zero_totals_and_a_csv_header(
    hub: HubProcess, tmp_path: Path, outputs: list[Result]
) -> None:
    cli, _ = account(hub, tmp_path, outputs, "erin")

    usage = cli("usage")
    assert usage.code == 0, usage.both
    assert "Your usage" in usage.out
    for column in ("day", "key", "model", "requests", "prompt", "completion", "spend (credits)"):
        assert column in usage.out
    assert table_row(usage.out, "total") == ["total", "", "", "0", "0", "0", "0.000000"]

    earnings = cli("earnings", "--since", "2026-01-01", "--until", "2026-01-31")
    assert earnings.code == 0, earnings.both
    assert "Your earnings" in earnings.out
    assert table_row(earnings.out, "total") == ["total", "", "", "0", "0", "0.000000"]

    for command in ("usage", "earnings"):
        exported = cli(command, "--csv", "--since", "2026-01-01")
        assert exported.code == 0, exported.both
        lines = exported.out.splitlines()
        assert len(lines) == 1, exported.out
        assert next(csv.reader(io.StringIO(lines[0])))[0] == "day"
        assert "│" not in exported.out

    bad_day = cli("usage", "--since", "yesterday")
    assert bad_day.code == 2
    assert "--since" in bad_day.err


def test_receipt_key_and_an_unknown_receipt(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli, _ = account(hub, tmp_path, outputs, "frank")
    key_file = tmp_path / "hub.key"

    saved = cli("receipt", "key", "-o", str(key_file))
    assert saved.code == 0, saved.both
    document = json.loads(key_file.read_text())
    status, served, _ = http_json("GET", hub.url + "/.well-known/potluck-hub-key")
    assert status == 200
    assert document == served
    assert f"saved hub key {document['fingerprint']}" in saved.out

    # No login needed: a fresh config with only --hub prints the same document.
    printed = Cli(tmp_path / "anonymous")("receipt", "key", "--hub", hub.url)
    assert printed.code == 0, printed.both
    assert json.loads(printed.out) == document

    # `receipt verify` takes the saved file as --key: it gets past the key and judges the receipt.
    bogus = tmp_path / "bogus.json"
    bogus.write_text(
        json.dumps({"receipt": {"hub": "ed25519:0000000000000000"}, "signature": base64.b64encode(bytes(64)).decode()})
    )
    verified = cli("receipt", "verify", str(bogus), "--key", str(key_file))
    assert verified.code == 1, verified.both
    assert f"not by this key ({document['fingerprint']})" in verified.err

    unknown = cli("receipt", "get", "req_unknown", "-o", str(tmp_path / "r.json"))
    assert unknown.code == 1
    assert unknown.err == "Error: No receipt for req_unknown\n"
    assert not (tmp_path / "r.json").exists()


def test_agent_prices_through_the_cli(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    owner, _ = account(hub, tmp_path, outputs, "grace")
    other, _ = account(hub, tmp_path, outputs, "heidi")
    group_id = new_group(owner, "Priced")
    assert owner("group", "billing", group_id, "--mode", "credits", "--max-price", "5").code == 0

    with enrolled_agent(hub, owner, tmp_path, "tiny-model") as (agent_id, _):
        none_yet = owner("agent", "prices", agent_id)
        assert none_yet.code == 0, none_yet.both
        assert "no prices set" in none_yet.out

        first = owner("agent", "set-price", agent_id, "tiny-model", "0.15", "0.6")
        assert first.code == 0, first.both
        assert "set tiny-model on agent" in first.out
        second = owner("agent", "set-price", agent_id, "other-model", "1", "2")
        assert second.code == 0, second.both
        shown = owner("agent", "prices", agent_id)
        assert table_row(shown.out, "tiny-model") == ["tiny-model", "0.15", "0.6"]
        assert table_row(shown.out, "other-model") == ["other-model", "1", "2"]

        assert owner("agent", "share", agent_id, group_id).code == 0
        # Once shared, the group's bounds apply to every price the owner sets.
        too_dear = owner("agent", "set-price", agent_id, "tiny-model", "9", "9")
        assert too_dear.code == 1
        assert "above this group's maximum" in too_dear.err
        quoted = owner("group", "prices", group_id)
        assert quoted.code == 0, quoted.both
        assert table_row(quoted.out, "tiny-model")[1:5] == [agent_id, "0.15", "0.6", "1"]

        # Someone else's agent answers like an unknown one.
        for args in (("set-price", agent_id, "tiny-model", "0", "0"), ("prices", agent_id)):
            denied = other("agent", *args)
            assert denied.code == 1
            assert f"No agent {agent_id}" in denied.err
    unknown = owner("agent", "set-price", "agt_nope", "m", "1", "1")
    assert unknown.code == 1
    assert "No agent agt_nope" in unknown.err
    negative = owner("agent", "set-price", agent_id, "m", "--", "-1", "1")
    assert negative.code == 2
