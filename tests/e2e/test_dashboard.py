"""The dashboard's numbers against real processes: totals that equal the ledger and the usage reports to the
unit, scoping between groups, agent-supplied names returned verbatim as JSON data, and the live stream."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testing.processes import AgentProcess, http_json
from tests.e2e.conftest import Fleet
from tests.e2e.test_accounting import FEE_PERCENT, PRICE, Market
from tests.e2e.test_billing_mix import Mix
from tests.e2e.test_isolation import Member

pytestmark = pytest.mark.slow

WAIT_S = 10.0


def dashboard(member: Member, path: str) -> dict[str, Any]:
    status, body = member.call("GET", "/api/dashboard/" + path)
    assert status == 200, body
    return body


def username(member: Member) -> str:
    return str(member.call("GET", "/api/me")[1]["username"])


def test_dashboard_totals_equal_the_ledger_and_the_usage_reports(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--platform-fee-percent", str(FEE_PERCENT))
    market = Market(fleet)
    market.grant(market.alice, 10.0)
    rng = random.Random(12)
    kinds = ["ok", "ok_stream", "no_messages", "status_400", "status_500", "cut", "abandon", "unknown"]
    plan = [*kinds, *(rng.choice(kinds) for _ in range(8))]
    rng.shuffle(plan)
    mix = Mix(fleet, market, rng)
    for kind in plan:
        mix.send(kind)
    total = len(mix.charged) + len(mix.free) + mix.unknown
    deadline = time.monotonic() + WAIT_S
    while True:  # a client that hung up is settled a moment after it left
        usage = market.alice.call("GET", "/api/usage")[1]["data"]
        if sum(r["requests"] + r["not_served"] for r in usage) == total or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    spend = sum(r["spend_micro"] for r in usage)
    earned = sum(r["earned_micro"] for r in market.bob.call("GET", "/api/earnings")[1]["data"])
    assert spend > earned > 0

    mine = dashboard(market.alice, "usage?days=2")
    assert mine["totals"]["spent_micro"] == spend == 10_000_000 - market.balance(market.alice)["balance_micro"]
    assert mine["totals"]["requests"] == sum(r["requests"] for r in usage)
    assert sum(d["not_served"] for d in mine["series"]) == mix.unknown
    assert sum(d["prompt_tokens"] for d in mine["series"]) == sum(r["prompt_tokens"] for r in usage)
    assert sum(d["completion_tokens"] for d in mine["series"]) == sum(r["completion_tokens"] for r in usage)
    theirs = dashboard(market.bob, "usage?days=2")
    assert theirs["totals"]["earned_micro"] == earned == market.balance(market.bob)["balance_micro"]
    [group] = [g for g in theirs["groups"] if g["group_id"] == market.group]
    shares = {m["username"]: m for m in group["members"]}
    alice, bob = username(market.alice), username(market.bob)
    assert shares[alice]["consumed_micro"] == spend
    assert shares[bob]["contributed_micro"] == earned
    assert shares[bob]["consumed_micro"] == shares[alice]["contributed_micro"] == 0
    assert mine["groups"] == []  # a member of the group, not one of its managers

    now = dashboard(market.alice, "now")["account"]
    assert (now["spent_24h_micro"], now["held_micro"]) == (spend, 0)
    assert now["balance_micro"] == 10_000_000 - spend
    assert dashboard(market.bob, "now")["account"]["earned_24h_micro"] == earned
    assert dashboard(market.alice, "holds") == {"held": 0.0, "held_micro": 0, "holds": []}
    [model] = dashboard(market.alice, "models")["models"]
    assert model["price"] == {
        "input_min": PRICE.input_per_mtok,
        "input_max": PRICE.input_per_mtok,
        "output_min": PRICE.output_per_mtok,
        "output_max": PRICE.output_per_mtok,
    }
    assert model["requests_15m"] == len(plan) - mix.unknown

    request = urllib.request.Request(fleet.hub.url + "/api/dashboard/usage.csv?days=2")
    request.add_header("Authorization", f"Bearer {market.alice.token}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        rows = list(csv.DictReader(io.StringIO(resp.read().decode())))
    assert sum(int(r["spent_micro"]) for r in rows) == spend


HOSTILE_AGENT = "<script>alert('agent')</script>"
HOSTILE_MODEL = '<img src=x onerror="alert(1)">'
HOSTILE_GPU = "<script>alert(document.cookie)</script>"


@pytest.fixture
def fake_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``nvidia-smi`` on PATH that reports one GPU with a hostile name (the agent runs the tool it finds)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho '0, {HOSTILE_GPU}, GPU-1, 37, 1000, 8000, 55, 120.5, 300.00'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


class Stream:
    """A dashboard's event stream, read as (event, JSON body)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.raw = bytearray()

    async def next(self, want: Any) -> dict[str, Any]:
        """The next event for which ``want(name, body)`` holds, within `WAIT_S`."""
        async with asyncio.timeout(WAIT_S):
            while True:
                chunk = await self.response.content.readuntil(b"\n\n")
                self.raw += chunk
                lines = chunk.decode().strip().split("\n")
                if lines[0].startswith(":"):
                    continue
                name = lines[0].removeprefix("event: ")
                body = json.loads(lines[1].removeprefix("data: "))
                if want(name, body):
                    return dict(body)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_stream(http: aiohttp.ClientSession, member: Member) -> Stream:
    response = await http.get(
        member.hub.url + "/api/dashboard/stream", headers={"Authorization": f"Bearer {member.token}"}
    )
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    return Stream(response)


async def test_scoping_verbatim_names_and_the_live_stream(
    fleet: Fleet, fake_gpu: None, http: aiohttp.ClientSession
) -> None:
    sfx = uuid.uuid4().hex[:6]
    olga, mallory = Member(fleet, f"olga-{sfx}"), Member(fleet, f"mallory-{sfx}")
    mine, hers = fleet.model("plain"), f"{HOSTILE_MODEL}-{sfx}"
    olga_group = olga.create("/api/groups", {"name": "olga's"})["id"]
    mallory_group = mallory.create("/api/groups", {"name": "mallory's"})["id"]
    _, olga_url = fleet.backend(mine)
    _, mallory_url = fleet.backend(hers)
    _, olga_agent = olga.agent(olga_url, f"olga-gpu-{sfx}")
    token = mallory.create("/api/agent-tokens", {"name": "m"})["token"]
    hostile_name = f"{HOSTILE_AGENT}-{sfx}"
    fleet.agents.append(
        AgentProcess(
            fleet.hub,
            fleet.root / "mallory",
            [mallory_url],
            name=hostile_name,
            token=token,
            extra=("--metrics-interval", "0.3"),
        )
    )
    mallory_agent = str(fleet.hub.wait_agent(hostile_name)["id"])
    assert olga.call("POST", f"/api/agents/{olga_agent}/groups", {"group_id": olga_group})[0] == 200
    assert mallory.call("POST", f"/api/agents/{mallory_agent}/groups", {"group_id": mallory_group})[0] == 200
    olga_key = olga.create("/api/keys", {"name": "olga's key"})["key"]
    mallory_key = mallory.create("/api/keys", {"name": "mallory's key"})["key"]

    stream = await open_stream(http, olga)
    first = await stream.next(lambda name, _body: name == "now")
    assert first["agents_online"] == 1

    mallory.client(mallory_key).chat.completions.create(model=hers, messages=[{"role": "user", "content": "x"}])
    secret = f"the prompt {sfx}"
    olga.client(olga_key).chat.completions.create(model=mine, messages=[{"role": "user", "content": secret}])
    row = await stream.next(lambda name, _body: name == "request")
    assert (row["model"], row["agent_id"], row["outcome"], row["key_name"]) == (mine, olga_agent, "ok", "olga's key")
    assert row["mine"] is True
    assert row["completion_tokens"] > 0

    started = time.monotonic()
    assert fleet.hub.admin("POST", f"/admin/agents/{olga_agent}/drain")[0] == 202
    change = await stream.next(lambda name, body: name == "agent" and body["state"] == "draining")
    assert change["agent_id"] == olga_agent
    assert time.monotonic() - started < 2.0
    await stream.next(lambda name, body: name == "event" and body["kind"] == "agent_draining")

    # A machine Olga adds shows up on her open page within 2 s of connecting.
    _, second = olga.agent(olga_url, f"olga-second-{sfx}")  # returns once the hub lists it online
    listed = time.monotonic()
    await stream.next(lambda name, body: name == "agent" and body["agent_id"] == second and body["state"] == "online")
    assert time.monotonic() - listed < 2.0

    # Olga never saw Mallory's agent, model or request, in the stream or in any answer.
    for leak in (mallory_agent, json.dumps(hers)[1:-1], json.dumps(hostile_name)[1:-1], "mallory"):
        assert leak.encode() not in stream.raw, leak
    assert secret.encode() not in stream.raw
    assert {m["id"] for m in dashboard(olga, "machines")["machines"]} == {olga_agent, second}
    assert [m["id"] for m in dashboard(olga, "models")["models"]] == [mine]
    assert mallory_agent not in json.dumps(dashboard(olga, "now"))
    status, _ = olga.call("GET", f"/api/dashboard/explain?model={mine}")
    assert status == 403

    # Mallory's names come back exactly as her agent sent them: JSON strings, not markup.
    deadline = time.monotonic() + WAIT_S
    while not (machine := dashboard(mallory, "machines")["machines"][0])["gpus"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert machine["name"] == hostile_name
    assert [g["name"] for g in machine["gpus"]] == [HOSTILE_GPU]
    assert machine["gpus"][0]["memory_total_bytes"] == 8000 * 1024 * 1024
    assert [m["id"] for m in machine["models"]] == [hers]
    [model] = dashboard(mallory, "models")["models"]
    assert (model["id"], model["hot_agents"], model["requests_15m"]) == (hers, 1, 1)
    status, raw, headers = http_json("GET", fleet.hub.url + "/api/dashboard/now", None, mallory.token)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert any(e["agent_name"] == hostile_name for e in raw["events"])
    stream.response.close()
