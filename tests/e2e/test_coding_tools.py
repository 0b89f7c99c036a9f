"""Claude Code and Codex CLI, run headless through `potluck claude|codex`, a real hub and agent, and a fake backend.

Each tool gets a plain prompt, and a turn where the model calls one of the tool's own functions (Claude Code's
`Read`, Codex's `exec_command`) and gets its result back: the fake backend answers the first request with that
call and, once the result comes back as a tool message, with text (`testing.fake_backend.ToolCall`). The tools
speak Anthropic's Messages API and OpenAI's Responses API to the hub; the backend speaks chat completions only,
so these also prove the hub's translation both ways.

The tools come from npm at the versions `scripts/install-tools` pins, installed into `.cache/npm-tools/`. All
their traffic stays on 127.0.0.1: the launchers turn off Claude Code's telemetry, error reports and update checks
and Codex's analytics, feedback uploads and update check themselves (the tests add nothing for that), and the
tests turn off Codex's plugin sync, which the launcher leaves to the user.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.fake_backend import FakeBackend, ToolCall
from tests.conftest import IN_CI
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".cache" / "npm-tools" / "node_modules" / ".bin"
RUN_TIMEOUT_S = 45
CODEX_QUIET = ("--disable", "plugins")


@functools.cache
def hub_routes() -> frozenset[str]:
    """The paths the hub's application registers (built, not started)."""
    from potluck.app import create_app
    from potluck.hub.settings import HubSettings

    app = create_app(HubSettings(), "unused")
    return frozenset(resource.canonical for resource in app.router.resources())


def require(route: str, tool: str) -> Path:
    """The tool's executable; a skip while the hub lacks `route`, and a failure in CI when the tool is missing."""
    assert route in hub_routes(), f"the hub does not register {route}"
    path = TOOLS_BIN / tool
    if not os.access(path, os.X_OK):
        reason = f"{path} is missing: run scripts/install-tools"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Setup:
    fleet: Fleet
    backend: FakeBackend
    model: str
    project: Path
    home: Path

    def launch(self, tool: str, *args: str) -> Run:
        """`potluck <tool> --hub HUB --model MODEL ARGS...` in the project folder, with a fresh home."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POTLUCK_", "ANTHROPIC_", "CLAUDE_", "CODEX_"))}
        env.update(
            PATH=f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', os.defpath)}",
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            CODEX_HOME=str(self.home / ".codex"),
            POTLUCK_API_KEY=self.fleet.key,
            NO_COLOR="1",
        )
        proc = subprocess.run(
            [sys.executable, "-m", "potluck", tool, "--hub", self.fleet.hub.url, "--model", self.model, *args],
            cwd=self.project,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def chats(self) -> list[dict[str, Any]]:
        """The bodies of the chat completions the backend received, in order."""
        return [r.json for r in list(self.backend.records) if r.path == "/v1/chat/completions" and r.json is not None]

    def metered(self) -> list[dict[str, Any]]:
        """The hub's usage records for this test's model, once there is one per backend request."""
        count = len(self.chats())

        def records() -> list[dict[str, Any]]:
            return [r for r in self.fleet.hub.usage(200) if r["model"] == self.model]

        self.fleet.hub.wait_for(lambda: len(records()) >= count, 5)
        return records()


def setup(fleet: Fleet, tmp_path: Path, tool_call: ToolCall | None = None) -> Setup:
    model = fleet.model("coder")
    backend, url = fleet.backend(model, tool_call=tool_call)
    agent = fleet.agent(url)
    fleet.hub.wait_agent(agent.name, models={model})
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    (home / ".codex").mkdir(parents=True)
    return Setup(fleet, backend, model, project, home)


def tool_round_trip(chats: list[dict[str, Any]], function: str, marker: str) -> None:
    """The backend got the call back with its id, and the tool's result (holding `marker`) after it."""
    assert len(chats) >= 2, chats
    offered = [t["function"]["name"] for t in chats[0].get("tools", []) if t.get("type") == "function"]
    assert function in offered
    last = chats[-1]["messages"]
    calls = [c for m in last if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    results = [m for m in last if m["role"] == "tool"]
    assert [c["function"]["name"] for c in calls] == [function]
    assert [r["tool_call_id"] for r in results] == [calls[0]["id"]]
    assert marker in json.dumps(results[0]["content"])
    assert last.index(results[0]) > max(i for i, m in enumerate(last) if m.get("tool_calls"))


def all_served(setup: Setup) -> None:
    records = setup.metered()
    assert len(records) == len(setup.chats())
    assert {r["outcome"] for r in records} == {"ok"}


# -- Claude Code ------------------------------------------------------------------------------------------


def claude_result(run: Run) -> dict[str, Any]:
    assert run.code == 0, run.out + run.err
    result: dict[str, Any] = json.loads(run.out)
    assert result["is_error"] is False, result
    return result


def test_claude_code_answers_a_plain_prompt(fleet: Fleet, tmp_path: Path) -> None:
    require("/v1/messages", "claude")
    s = setup(fleet, tmp_path)
    result = claude_result(s.launch("claude", "-p", "Say hello", "--output-format", "json"))
    assert result["result"].startswith("tok0 tok1")
    chats = s.chats()
    assert chats
    assert {c["model"] for c in chats} == {s.model}
    assert "Say hello" in json.dumps(chats[0]["messages"])
    all_served(s)


def test_claude_code_calls_a_tool_and_gets_its_result_back(fleet: Fleet, tmp_path: Path) -> None:
    require("/v1/messages", "claude")
    marker = f"potluck-marker-{uuid.uuid4().hex}"
    notes = tmp_path / "project" / "notes.txt"
    s = setup(fleet, tmp_path, ToolCall(name="Read", arguments=json.dumps({"file_path": str(notes)})))
    notes.write_text(marker + "\n")
    result = claude_result(s.launch("claude", "-p", "What does notes.txt say?", "--output-format", "json"))
    assert result["result"].startswith("tok0 tok1")
    assert result["num_turns"] >= 2
    tool_round_trip(s.chats(), "Read", marker)
    all_served(s)


# -- Codex CLI --------------------------------------------------------------------------------------------


def codex_events(run: Run) -> list[dict[str, Any]]:
    assert run.code == 0, run.out + run.err
    events = [json.loads(line) for line in run.out.splitlines() if line.startswith("{")]
    assert [e for e in events if e["type"] == "turn.completed"], events
    assert not [e for e in events if e["type"] in ("turn.failed", "error")], events
    return events


def items(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


def test_codex_answers_a_plain_prompt(fleet: Fleet, tmp_path: Path) -> None:
    require("/v1/responses", "codex")
    s = setup(fleet, tmp_path)
    events = codex_events(s.launch("codex", *CODEX_QUIET, "exec", "--skip-git-repo-check", "--json", "Say hello"))
    [message] = items(events, "agent_message")
    assert message["text"].startswith("tok0 tok1")
    chats = s.chats()
    assert {c["model"] for c in chats} == {s.model}
    assert "Say hello" in json.dumps(chats[0]["messages"])
    all_served(s)


def test_codex_runs_a_command_and_gets_its_output_back(fleet: Fleet, tmp_path: Path) -> None:
    require("/v1/responses", "codex")
    marker = f"potluck-marker-{uuid.uuid4().hex}"
    s = setup(fleet, tmp_path, ToolCall(name="exec_command", arguments=json.dumps({"cmd": "cat notes.txt"})))
    (s.project / "notes.txt").write_text(marker + "\n")
    events = codex_events(
        s.launch("codex", *CODEX_QUIET, "exec", "--skip-git-repo-check", "--json", "What does notes.txt say?")
    )
    [command] = items(events, "command_execution")
    assert (command["exit_code"], command["aggregated_output"].strip()) == (0, marker)
    [message] = items(events, "agent_message")
    assert message["text"].startswith("tok0 tok1")
    tool_round_trip(s.chats(), "exec_command", marker)
    all_served(s)
