"""Usage, earnings, the ledger and receipts agree to the unit on a random mix of outcomes (real processes).

The mix: requests served in full (streamed and not), rejected by the backend (400: no `messages`, a
scripted 400, a 500 and a 503), cut short by the backend mid-stream, abandoned by the client
mid-stream, and asked for a model nobody serves. Only what reached the client is charged; a request
that never reached an agent is recorded with 0 tokens and no agent, and reports count it apart.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.test_accounting import FEE_PERCENT, Market

pytestmark = pytest.mark.slow


def _post(fleet: Fleet, key: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(fleet.hub.url + "/v1/chat/completions", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, resp.headers["x-request-id"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["x-request-id"], exc.read()


def _abandon(fleet: Fleet, key: str, body: dict[str, Any]) -> str:
    """Read two events of a slow stream, then hang up."""
    request = urllib.request.Request(fleet.hub.url + "/v1/chat/completions", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=20) as resp:
        assert resp.status == 200
        events = 0
        while events < 2:
            line = resp.readline()
            assert line, "the stream ended early"
            events += line.startswith(b"data:")
        return str(resp.headers["x-request-id"])


class Mix:
    """Sends one request of a kind and remembers whether it must be charged."""

    def __init__(self, fleet: Fleet, market: Market, rng: random.Random) -> None:
        self.fleet, self.key, self.rng = fleet, market.alice_key, rng
        self.model = market.model
        self.chat = {"model": market.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32}
        self.charged: list[str] = []
        self.free: list[str] = []
        self.unknown = 0

    def send(self, kind: str) -> None:
        chunks = self.rng.randint(1, 20)
        fleet, key, chat = self.fleet, self.key, self.chat
        if kind in ("ok", "ok_stream"):
            stream = kind == "ok_stream"
            status, rid, body = _post(fleet, key, {**chat, "stream": stream, "fake": {"chunks": chunks}})
            assert status == 200, body
            assert body.endswith(b"data: [DONE]\n\n") == stream
            self.charged.append(rid)
        elif kind == "no_messages":
            status, rid, _ = _post(fleet, key, {"model": self.model, "max_tokens": 8})
            assert status == 400
            self.free.append(rid)
        elif kind.startswith("status_"):
            code = int(kind.removeprefix("status_"))
            stream = self.rng.random() < 0.5
            status, rid, body = _post(fleet, key, {**chat, "stream": stream, "fake": {"status": code}})
            assert status == code, body
            self.free.append(rid)
        elif kind == "cut":
            status, rid, body = _post(fleet, key, {**chat, "stream": True, "fake": {"chunks": 10, "fail_after": 3}})
            assert status == 200
            assert b"[DONE]" not in body
            self.charged.append(rid)  # three tokens reached the client: it pays for those
        elif kind == "abandon":
            slow = {**chat, "stream": True, "fake": {"chunks": 20, "delay": 0.05}}
            self.charged.append(_abandon(fleet, key, slow))
        else:
            status, _rid, body = _post(fleet, key, {**chat, "model": f"nobody-serves-{self.rng.random()}"})
            assert status == 404, body
            self.unknown += 1


def test_usage_earnings_ledger_and_receipts_agree_on_a_mix_of_outcomes(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--platform-fee-percent", str(FEE_PERCENT))
    market = Market(fleet)
    market.grant(market.alice, 10.0)
    rng = random.Random(7)
    kinds = ["ok", "ok_stream", "no_messages", "status_400", "status_500", "status_503", "cut", "abandon", "unknown"]
    plan = [*kinds, *(rng.choice(kinds) for _ in range(16))]
    rng.shuffle(plan)
    mix = Mix(fleet, market, rng)
    for kind in plan:
        mix.send(kind)
    served_ok, not_charged, unknown = mix.charged, mix.free, mix.unknown

    total = len(served_ok) + len(not_charged) + unknown
    deadline = time.monotonic() + 15
    while True:  # usage records are written in batches: wait until every request is in the report
        usage = market.alice.call("GET", "/api/usage")[1]["data"]
        if sum(r["requests"] + r["not_served"] for r in usage) == total or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(r["requests"] for r in usage) == len(served_ok) + len(not_charged)
    assert sum(r["not_served"] for r in usage) == unknown
    unserved_rows = [r for r in usage if r["model"] != market.model]
    assert all(
        (r["requests"], r["prompt_tokens"], r["completion_tokens"], r["spend_micro"]) == (0, 0, 0, 0)
        for r in unserved_rows
    )

    spend = sum(r["spend_micro"] for r in usage)
    earnings = market.bob.call("GET", "/api/earnings")[1]["data"]
    earned = sum(r["earned_micro"] for r in earnings)
    served_rows = [r for r in usage if r["model"] == market.model]
    assert sum(r["requests"] for r in earnings) == sum(r["requests"] for r in served_rows)
    assert sum(r["prompt_tokens"] for r in earnings) == sum(r["prompt_tokens"] for r in served_rows)
    assert sum(r["completion_tokens"] for r in earnings) == sum(r["completion_tokens"] for r in served_rows)

    # The ledger: the consumer paid exactly the spend, the owner got exactly the earnings, the platform the rest.
    alice, bob = market.balance(market.alice), market.balance(market.bob)
    assert (alice["balance_micro"], alice["held_micro"]) == (10_000_000 - spend, 0)
    assert bob["balance_micro"] == earned
    assert spend > earned > 0

    # Receipts: one per charged request, none for what was not served, and they sum to the same totals.
    receipts = []
    for rid in served_ok:
        status, signed = market.alice.call("GET", f"/api/receipts/{rid}")
        assert status == 200, (rid, signed)
        receipts.append(signed["receipt"] if "receipt" in signed else json.loads(signed["payload"]))
    for rid in not_charged:
        assert market.alice.call("GET", f"/api/receipts/{rid}")[0] == 404, rid
    assert sum(r["charged"] for r in receipts) == spend
    assert sum(r["earned"] for r in receipts) == earned
