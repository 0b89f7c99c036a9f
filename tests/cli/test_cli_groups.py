"""`potluck login`, `potluck group ...` and `potluck admin create-user` as subprocesses against a real hub.

Each CLI run gets its own ``XDG_CONFIG_HOME`` (one per user), so two users can be logged in side by
side. Passwords are unique strings that are looked for in every output, the login file and the
hub's log.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from potluck.cli.client import HubError, is_insecure, normalize_hub, parse_duration
from testing.processes import ADMIN_TOKEN, HubProcess


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


@dataclass
class Cli:
    """Runs ``python -m potluck`` with one user's config directory."""

    config_home: Path
    hub_url: str | None = None
    seen: list[Result] | None = None

    def __call__(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Result:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
        full_env.update({"XDG_CONFIG_HOME": str(self.config_home), "COLUMNS": "200", "NO_COLOR": "1"})
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "potluck", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=30,
            # No controlling terminal: a hidden prompt reads standard input instead of /dev/tty.
            start_new_session=True,
            check=False,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if self.seen is not None:
            self.seen.append(result)
        return result

    @property
    def config_file(self) -> Path:
        return self.config_home / "potluck" / "cli.json"


def new_password() -> str:
    return "pw-" + secrets.token_hex(12)


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


def make_cli(tmp_path: Path, name: str, outputs: list[Result]) -> Cli:
    return Cli(tmp_path / name / "config", seen=outputs)


def create_user(cli: Cli, hub: HubProcess, username: str, password: str, *extra: str) -> Result:
    return cli(
        "admin", "create-user", username, "--hub", hub.url, "--password-stdin", *extra,
        stdin=password + "\n", env={"POTLUCK_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip


def login(cli: Cli, hub: HubProcess, username: str, password: str) -> Result:
    return cli("login", "--hub", hub.url, "--username", username, "--password-stdin", stdin=password + "\n")


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


# -- the whole flow ---------------------------------------------------------------------------------


def test_two_users_share_a_group_through_the_cli(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    alice, bob = make_cli(tmp_path, "alice", outputs), make_cli(tmp_path, "bob", outputs)
    alice_name, bob_name = unique("alice"), unique("bob")
    alice_pw, bob_pw = new_password(), new_password()

    created = create_user(alice, hub, alice_name, alice_pw)
    assert created.code == 0, created.both
    assert re.search(rf"created user {alice_name}: usr_\w+", created.out)
    created = create_user(bob, hub, bob_name, bob_pw)
    assert created.code == 0, created.both

    for cli, name, password in ((alice, alice_name, alice_pw), (bob, bob_name, bob_pw)):
        result = login(cli, hub, name, password)
        assert result.code == 0, result.both
        assert f"logged in to {hub.url} as {name}" in result.out

    made = alice("group", "create", "Night owls")
    assert made.code == 0, made.both
    match = re.search(r"created group Night owls: (grp_\w+)", made.out)
    assert match is not None, made.out
    group_id = match.group(1)

    listed = alice("group", "list")
    assert listed.code == 0, listed.both
    assert group_id in listed.out
    assert "Night owls" in listed.out
    assert "owner" in listed.out

    invite = alice("group", "invite", group_id, "--max-uses", "2", "--expires-in", "12h")
    assert invite.code == 0, invite.both
    assert "2 use(s)" in invite.out
    code = invite.out.strip().splitlines()[-1]
    assert invite.out.count(code) == 1, "the code is printed once"

    joined = bob("group", "join", code)
    assert joined.code == 0, joined.both
    assert f"joined group {group_id}" in joined.out

    again = bob("group", "join", code)
    assert again.code == 1
    assert "Error:" in again.err

    members = bob("group", "members", group_id)
    assert members.code == 0, members.both
    assert alice_name in members.out
    assert bob_name in members.out
    assert re.search(rf"{re.escape(alice_name)}\s.*owner", members.out)
    assert re.search(rf"{re.escape(bob_name)}\s.*member", members.out)

    bob_groups = bob("group", "list")
    assert group_id in bob_groups.out
    assert "member" in bob_groups.out

    # A member cannot invite: the hub's permission message, exit status 1.
    denied = bob("group", "invite", group_id)
    assert denied.code == 1
    assert "does not allow this" in denied.err

    left = bob("group", "leave", group_id)
    assert left.code == 0, left.both
    gone = bob("group", "members", group_id)
    assert gone.code == 1
    assert f"No group {group_id}" in gone.err

    # The owner cannot leave.
    owner_leaves = alice("group", "leave", group_id)
    assert owner_leaves.code == 1
    assert "owner cannot leave" in owner_leaves.err

    # The login files: 0600 in a 0700 directory, a hub and a token, no password.
    for cli, password in ((alice, alice_pw), (bob, bob_pw)):
        assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
        text = cli.config_file.read_text()
        assert password not in text
        assert '"hub"' in text
        assert '"token"' in text
        assert set(json.loads(text)) == {"hub", "token"}

    for result in outputs:
        for password in (alice_pw, bob_pw):
            assert password not in result.both
    assert alice_pw not in hub.log()
    assert bob_pw not in hub.log()


# -- failures ---------------------------------------------------------------------------------------


def test_wrong_password_exits_1_with_the_hubs_message(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli = make_cli(tmp_path, "carol", outputs)
    name, password, wrong = unique("carol"), new_password(), new_password()
    assert create_user(cli, hub, name, password).code == 0

    result = login(cli, hub, name, wrong)
    assert result.code == 1
    assert result.err.startswith("Error: ")
    assert result.err == "Error: Wrong username or password\n"
    assert not cli.config_file.exists(), "a failed login stores nothing"
    for seen in outputs:
        assert password not in seen.both
        assert wrong not in seen.both


def test_admin_errors_and_the_hidden_prompt(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli = make_cli(tmp_path, "dave", outputs)
    name, password = unique("dave"), new_password()

    no_token = cli("admin", "create-user", name, "--hub", hub.url, "--password-stdin", stdin=password + "\n")
    assert no_token.code == 2
    assert "--admin-token" in no_token.err

    bad_token = cli(
        "admin", "create-user", name, "--hub", hub.url, "--admin-token", "padm-wrong", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    assert bad_token.code == 1
    assert bad_token.err.startswith("Error: ")

    # No --password-stdin: a hidden prompt, asked twice (here answered on standard input).
    prompted = cli(
        "admin", "create-user", name, "--hub", hub.url, "--role", "admin", "--admin-token", ADMIN_TOKEN,
        stdin=f"{password}\n{password}\n",
    )  # fmt: skip
    assert prompted.code == 0, prompted.both
    assert f"created admin {name}" in prompted.out

    taken = create_user(cli, hub, name, password, "--admin-token", ADMIN_TOKEN)
    assert taken.code == 1
    assert taken.err.startswith("Error: ")

    short = create_user(cli, hub, unique("erin"), "short", "--admin-token", ADMIN_TOKEN)
    assert short.code == 1
    assert "`password` must be 8 to 1024 characters" in short.err

    # The login prompts too, for the username and then the password.
    prompted_login = cli("login", "--hub", hub.url, stdin=f"{name}\n{password}\n")
    assert prompted_login.code == 0, prompted_login.both
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600

    for seen in outputs:
        assert password not in seen.both


def test_token_stays_with_its_hub_and_logout_forgets_it(hub: HubProcess, tmp_path: Path, outputs: list[Result]) -> None:
    cli = make_cli(tmp_path, "frank", outputs)
    not_logged_in = cli("group", "list", "--hub", hub.url)
    assert not_logged_in.code == 1
    assert "not logged in" in not_logged_in.err
    no_hub = cli("group", "list")
    assert no_hub.code == 2
    assert "--hub" in no_hub.err

    name, password = unique("frank"), new_password()
    assert create_user(cli, hub, name, password).code == 0
    assert login(cli, hub, name, password).code == 0
    assert cli("group", "list").code == 0

    # Another hub named with --hub or POTLUCK_HUB_URL never gets this hub's token.
    elsewhere = cli("group", "list", env={"POTLUCK_HUB_URL": "http://127.0.0.1:9"})
    assert elsewhere.code == 1
    assert "not logged in to http://127.0.0.1:9" in elsewhere.err

    bad_duration = cli("group", "invite", "grp_x", "--expires-in", "soon")
    assert bad_duration.code == 2
    assert "--expires-in" in bad_duration.err

    out = cli("logout")
    assert out.code == 0, out.both
    assert "token" not in json.loads(cli.config_file.read_text())
    after = cli("group", "list")
    assert after.code == 1
    assert "not logged in" in after.err


def test_unreachable_hub_is_a_clean_error(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "config")
    result = cli("login", "--hub", "http://127.0.0.1:9", "--username", "someone", "--password-stdin", stdin="x" * 10)
    assert result.code == 1
    assert "cannot reach the hub" in result.err
    assert "Traceback" not in result.err


# -- helpers of the client module -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "7x", "-5", "1.5h", "h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_normalize_hub() -> None:
    assert normalize_hub("http://127.0.0.1:8642/") == "http://127.0.0.1:8642"
    assert normalize_hub("hub.example:8642") == "https://hub.example:8642"
    for bad in ("ftp://x", "http://", "https://user:pw@hub", "https://hub/?q=1"):
        with pytest.raises(HubError):
            normalize_hub(bad)
    assert is_insecure("http://10.0.0.5:8642")
    assert not is_insecure("http://127.0.0.1:8642")
    assert not is_insecure("https://10.0.0.5:8642")
