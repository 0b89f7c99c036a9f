"""The scenarios: one table of the loads the benchmark can drive, and the HTTP request each one sends.

A scenario names its kind of load, its concurrency, and the API it talks to (`Api`: path, body, and how a
complete stream ends), so a scenario for another dialect is one more row in `scenario_table`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODEL = "fake-model"
BURST_CHUNKS = 64


class Kind(enum.StrEnum):
    """The shape of a scenario's load; each kind is also a group name for ``--scenarios``."""

    NONSTREAM = "nonstream"
    STREAM = "stream"
    """Streams that the backend writes all at once ("burst")."""
    PACED = "paced"
    """Streams whose chunks the backend spaces out (``Scenario.delay``)."""
    IDLE = "idle"
    """Agents that connect and sit idle; no requests."""


GROUPS = frozenset(kind.value for kind in Kind)
"""Group names for ``--scenarios``: each kind names all of its scenarios."""


@dataclass(frozen=True, slots=True)
class Api:
    """Where a scenario's requests go, what they carry, and how a complete stream ends."""

    path: str
    body: Mapping[str, Any]
    """The body of a non-streaming request; `build_request` adds ``stream`` and the fake backend's pacing."""
    stream_end: bytes
    """Bytes that only the last SSE event of a complete stream contains (the load generator looks for them
    in the stream's last bytes)."""
    end_event_is_chunk: bool = False
    """Whether that last event counts as a relayed chunk (OpenAI's ``data: [DONE]`` does not)."""


OPENAI_CHAT = Api(
    "/v1/chat/completions",
    {"model": MODEL, "messages": [{"role": "user", "content": "Say something short."}]},
    b"[DONE]",
)


ANTHROPIC_MESSAGES = Api(
    "/v1/messages",
    {"model": MODEL, "max_tokens": 1024, "messages": [{"role": "user", "content": "Say something short."}]},
    b"message_stop",
)
"""Anthropic's Messages: through Potluck the agent translates them (the backend is a generic OpenAI server)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: Kind
    concurrency: int
    """Concurrent requests (closed loop); for ``idle``, the number of agents."""
    chunks: int = BURST_CHUNKS
    delay: float = 0.0
    api: Api = OPENAI_CHAT

    @property
    def streaming(self) -> bool:
        return self.kind in (Kind.STREAM, Kind.PACED)

    @property
    def stream_s(self) -> float:
        """How long one paced stream lasts at the backend."""
        return self.delay * max(0, self.chunks - 1)


def scenario_table(quick: bool) -> dict[str, Scenario]:
    """Every scenario, by name, in the order they run (``--quick`` shrinks the big ones)."""
    return {
        s.name: s
        for s in (
            Scenario("nonstream-c1", Kind.NONSTREAM, 1),
            Scenario("nonstream-c64", Kind.NONSTREAM, 64),
            Scenario("nonstream-c256", Kind.NONSTREAM, 256),
            Scenario("stream-c32", Kind.STREAM, 32),
            Scenario("stream-c256", Kind.STREAM, 256),
            Scenario("messages-stream-c32", Kind.STREAM, 32, api=ANTHROPIC_MESSAGES),
            Scenario("messages-stream-c256", Kind.STREAM, 256, api=ANTHROPIC_MESSAGES),
            Scenario("paced-c1000", Kind.PACED, 200 if quick else 1000, chunks=10 if quick else 40, delay=0.05),
            Scenario("idle-agents", Kind.IDLE, 300 if quick else 10_000),
        )
    }


def select(names: Sequence[str], quick: bool) -> list[Scenario]:
    """The scenarios named (a kind names all of its scenarios), in the table's order."""
    table = scenario_table(quick)
    chosen: list[str] = []
    for name in names:
        group = [s.name for s in table.values() if s.kind == name] if name in GROUPS else [name]
        for expanded in group:
            if expanded not in table:
                raise SystemExit(f"unknown scenario {expanded!r}; choose from {', '.join(table)} or a group")
            if expanded not in chosen:
                chosen.append(expanded)
    return [table[name] for name in table if name in chosen]


def build_request(host: str, port: int, token: str | None, scenario: Scenario) -> bytes:
    """The whole HTTP/1.1 request (head and body) that the load generator sends again and again."""
    body: dict[str, Any] = dict(scenario.api.body)
    if scenario.streaming:
        body["stream"] = True
    if scenario.kind is Kind.PACED:
        body["fake"] = {"chunks": scenario.chunks, "delay": scenario.delay}
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = [
        f"POST {scenario.api.path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: */*",
        f"Content-Length: {len(raw)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw
