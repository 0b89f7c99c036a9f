"""What the hub needs from an agent's connection. `api/agent_ws.py` implements it over a WebSocket."""

from __future__ import annotations

from typing import Protocol


class AgentChannel(Protocol):
    def send(self, frame: bytes) -> None:
        """Queue one encoded frame; frames queued in the same loop turn leave as one message."""

    def close(self) -> None:
        """Close the connection (the agent will reconnect if it should)."""
