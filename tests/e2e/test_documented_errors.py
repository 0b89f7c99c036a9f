"""What docs/api.md promises about errors that the other end-to-end tests do not pin: a backend's
`Retry-After` reaches the client, an error body that is not an OpenAI error object is wrapped with the
hub's own type and code, and an admin drain survives a hub restart."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from aiohttp import web

from testing.processes import HubProcess, free_port
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet

pytestmark = pytest.mark.slow


class ScriptedErrors:
    """A backend whose chat answer is an error: a 429 with `Retry-After` for ``"reply": "rate_limited"``, else a
    400 whose `error` is a string."""

    def __init__(self, model: str) -> None:
        self.model = model

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        if (await request.json())["reply"] == "rate_limited":
            body = {"error": {"message": "slow down", "type": "rate_limit_error", "code": None}}
            return web.json_response(body, status=429, headers={"Retry-After": "7", "X-Backend-Secret": "s"})
        return web.json_response({"error": "context window exceeded"}, status=400)


def _chat(client: openai.OpenAI, model: str, reply: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], extra_body={"reply": reply}
        )
    return failed.value


def test_backend_retry_after_reaches_the_client_and_its_other_headers_do_not(fleet: Fleet) -> None:
    model = fleet.model()
    fleet.agent(fleet.serve(ScriptedErrors(model)))

    error = _chat(fleet.client(), model, "rate_limited")

    assert error.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert "X-Backend-Secret" not in error.response.headers
    assert error.response.json() == {"error": {"message": "slow down", "type": "rate_limit_error", "code": None}}


def test_error_body_without_an_error_object_is_wrapped_as_the_hubs_upstream_error(fleet: Fleet) -> None:
    model = fleet.model()
    fleet.agent(fleet.serve(ScriptedErrors(model)))

    error = _chat(fleet.client(), model, "string_error")

    assert error.status_code == 400
    wrapped = error.response.json()["error"]
    assert (wrapped["type"], wrapped["code"]) == ("server_error", "upstream_error")
    assert "context window exceeded" in wrapped["message"]
    assert "Retry-After" not in error.response.headers


def test_admin_drain_survives_a_hub_restart(tmp_path: Path) -> None:
    args = ("--port", str(free_port()), *FAST_HUB_ARGS)
    hub = HubProcess(tmp_path / "hub", *args)
    fleet = Fleet(hub, tmp_path / "fleet")
    restarted = None
    try:
        model = fleet.model()
        _backend, url = fleet.backend(model)
        agent = fleet.agent(url)
        agent_id = hub.wait_agent(agent.name)["id"]
        assert hub.admin("POST", f"/admin/agents/{agent_id}/drain")[0] == 202
        hub.stop()

        restarted = HubProcess(tmp_path / "hub", *args)
        assert restarted.wait_agent(agent.name, state="draining", timeout=20)["drained_by_admin"] is True
        with pytest.raises(openai.APIStatusError) as refused:
            fleet.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert refused.value.status_code == 503
        assert refused.value.response.json()["error"]["code"] == "server_overloaded"
        assert refused.value.response.headers["Retry-After"] == "5"

        assert restarted.admin("POST", f"/admin/agents/{agent_id}/resume")[1]["state"] == "online"
        reply = fleet.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content
    finally:
        fleet.close()
        hub.stop()
        if restarted is not None:
            restarted.stop()
