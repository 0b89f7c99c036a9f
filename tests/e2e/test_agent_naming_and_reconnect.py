"""What an agent's owner sees: names from enrolment tokens, a quick return after a hub restart, short logs."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from potluck.agent.backoff import FAST_MAX_S
from testing.processes import AgentProcess, HubProcess, free_port
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet

pytestmark = pytest.mark.slow

# One line per failed try: why, then when the next one comes (never an exception's repr or a traceback).
RETRY_LINE = re.compile(
    r" WARNING potluck\.agent\.daemon (the hub closed the connection"
    r"|cannot connect to the hub at 127\.0\.0\.1:\d+: Connection refused"
    r"|the hub asked us to come back later \(shutting_down: the hub is shutting down\))"
    r"; reconnecting in \d+\.\d\d s$"
)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+ ")


def test_agents_are_named_after_their_enrolment_tokens_and_name_overrides(fleet: Fleet) -> None:
    _backend, url = fleet.backend(fleet.model())
    for name in ("alpha", "beta"):
        token = fleet.hub.create_agent_token(name)
        agent = AgentProcess(fleet.hub, fleet.root / name, [url], name=name, token=token, pass_name=False)
        fleet.agents.append(agent)
    token = fleet.hub.create_agent_token("gamma")
    chosen = AgentProcess(fleet.hub, fleet.root / "gamma", [url], name="chosen-by-owner", token=token)
    fleet.agents.append(chosen)

    for name in ("alpha", "beta", "chosen-by-owner"):
        fleet.hub.wait_agent(name)

    listed = sorted(agent["name"] for agent in fleet.hub.agents())
    assert listed == ["alpha", "beta", "chosen-by-owner"]
    assert socket.gethostname() not in listed


def test_agent_is_back_within_two_seconds_of_a_restarted_hub_listening(tmp_path: Path) -> None:
    args = ("--port", str(free_port()), *FAST_HUB_ARGS)
    hub = HubProcess(tmp_path / "hub", *args)
    fleet = Fleet(hub, tmp_path / "fleet")
    restarted = None
    try:
        model = fleet.model()
        _backend, url = fleet.backend(model)
        agent = fleet.agent(url)
        agent_id = hub.wait_agent(agent.name)["id"]
        hub.stop()
        # A real restart keeps the hub away for a few seconds: long enough for a plain exponential
        # backoff to have grown past the 2 s this test allows.
        assert HubProcess.wait_for(lambda: agent.log().count("cannot connect to the hub") >= 6, timeout=20)

        restarted = HubProcess(tmp_path / "hub", *args)
        listening_at = time.monotonic()
        assert restarted.url == hub.url
        back = restarted.wait_agent(agent.name, models={model}, timeout=10)
        back_after = time.monotonic() - listening_at

        assert back["id"] == agent_id
        assert back_after < 2.0, f"the agent took {back_after:.2f} s to come back"
        lines = agent.log().splitlines()
        assert all(LOG_LINE.match(line) for line in lines), "a log record spans several lines"
        retries = [line for line in lines if "reconnecting in" in line]
        assert len(retries) >= 7
        assert all(RETRY_LINE.search(line) for line in retries), retries
        # While the hub was away the agent kept trying about every second, never backing off further.
        assert all(float(line.rsplit(" ", 2)[1]) <= FAST_MAX_S for line in retries), retries
        assert not any("ConnectionKey" in line or "Traceback" in line for line in lines)
    finally:
        fleet.close()
        hub.stop()
        if restarted is not None:
            restarted.stop()
