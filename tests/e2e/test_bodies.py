"""Deeply nested bodies through real processes: refused by the hub before anything decodes them, and a body
at the limit survives every re-encoding on the way (the hub's alias rewrite, the agent's ``stream_options``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from potluck.protocol.json_depth import MAX_JSON_DEPTH
from tests.e2e.conftest import Fleet
from tests.e2e.test_isolation import Member

pytestmark = pytest.mark.slow


def post(url: str, key: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def chat(model: str, depth: int, **fields: Any) -> bytes:
    """A chat request whose unknown field ``x`` makes the whole body ``depth`` levels deep."""
    head = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **fields})
    levels = depth - 1
    return head[:-1].encode() + b',"x":' + b"[" * levels + b"]" * levels + b"}"


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def test_deep_bodies_are_refused_and_bodies_at_the_limit_survive_every_rewrite(fleet: Fleet) -> None:
    served = fleet.model("deep")
    backend, url = fleet.backend(served)
    owner = Member(fleet, "deep-owner")
    group = owner.create("/api/groups", {"name": "deep"})["id"]
    _agent, agent_id = owner.agent(url, "deep-agent")
    assert owner.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
    key = owner.create("/api/keys", {"name": "k"})["key"]
    assert owner.call("PUT", f"/api/groups/{group}/aliases/deep-alias", {"models": [served]})[0] == 200

    for fields in ({}, {"stream": True}, {"stream": True, "stream_options": {"include_usage": False}}):
        status, raw, headers = post(fleet.hub.url, key, chat("deep-alias", 1000, **fields))
        assert status == 400, raw
        assert json.loads(raw)["error"]["type"] == "invalid_request_error"
        assert headers["x-request-id"]
    assert [r for r in backend.records if r.path == "/v1/chat/completions"] == []

    # At the limit: the hub names the concrete model, the agent asks the backend for usage.
    for fields in ({}, {"stream": True}, {"stream": True, "stream_options": {"include_usage": False}}):
        status, raw, _ = post(fleet.hub.url, key, chat("deep-alias", MAX_JSON_DEPTH, **fields))
        assert status == 200, raw
        if fields:
            assert raw.rstrip().endswith(b"data: [DONE]"), raw
    sent = [r.json for r in backend.records if r.path == "/v1/chat/completions"]
    assert [(r["model"], r.get("stream", False)) for r in sent if r] == [
        (served, False),
        (served, True),
        (served, True),
    ]
    assert [r["stream_options"] for r in sent[1:] if r] == [{"include_usage": True}] * 2
    assert all(r and depth_of(r) == MAX_JSON_DEPTH for r in sent)
