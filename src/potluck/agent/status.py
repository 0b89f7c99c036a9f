"""A read-only view of a running agent, for front ends that wrap the daemon (the tray, its status page).

`AgentDaemon.status()` builds an `AgentStatus` on the daemon's event loop; nothing here changes the
agent. `Tally` counts the requests the agent finished today (UTC), kept by the daemon's connection.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from potluck._shared.clock import Clock, SystemClock
from potluck.protocol.agent import Usage
from potluck.protocol.metrics import HostMetrics


class Link(enum.StrEnum):
    """The agent's connection to the hub."""

    CONNECTING = "connecting"
    """Started, no session yet."""
    CONNECTED = "connected"
    """The hub accepted it and may send it work."""
    OFFLINE = "offline"
    """The last attempt failed; it retries with backoff."""


@dataclass(frozen=True, slots=True)
class ModelView:
    id: str
    hot: bool


@dataclass(frozen=True, slots=True)
class BackendView:
    url: str
    kind: str
    healthy: bool
    version: str | None
    models: tuple[ModelView, ...]


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What the agent is doing now (a snapshot; strings from backends are untrusted)."""

    hub_url: str
    link: Link
    agent_id: str | None
    paused: bool
    in_flight: int
    max_concurrency: int
    last_error: str | None
    backends: tuple[BackendView, ...]
    host: HostMetrics | None
    """The latest host sample (GPUs, CPU, RAM); None before the first."""
    day: dt.date
    requests_today: int
    failed_today: int
    prompt_tokens_today: int
    completion_tokens_today: int


@dataclass(slots=True)
class Tally:
    """Requests finished today (UTC), as the agent saw them end; the count starts again each day."""

    clock: Clock = field(default_factory=SystemClock)
    day: dt.date = dt.date.min
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def record(self, *, failed: bool, usage: Usage | None) -> None:
        self.roll()
        self.requests += 1
        self.failed += failed
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    def roll(self) -> None:
        today = self.clock.wall().date()
        if today != self.day:
            self.day = today
            self.requests = self.failed = self.prompt_tokens = self.completion_tokens = 0
