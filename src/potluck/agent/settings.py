"""Agent settings: one object, built once by the CLI from options and ``POTLUCK_AGENT_*`` variables."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "potluck" / "agent"


def host_is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AgentSettings:
    hub_url: str
    token: str | None = None
    """One-time enrolment token; needed only until the hub has accepted this agent's key."""
    backends: tuple[str, ...] = ()
    name: str = field(default_factory=socket.gethostname)
    max_concurrency: int = 8
    data_dir: Path = field(default_factory=default_data_dir)
    drain_timeout: float = 30.0
    catalog_interval: float = 30.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    allow_insecure: bool = False
    """Allow ws:// (plain) to a hub that is not on loopback."""
    log_level: str = "info"

    def validate(self) -> None:
        scheme = urlsplit(self.hub_url).scheme
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"--hub must be an http(s):// or ws(s):// URL, not {self.hub_url!r}")
        if scheme in ("http", "ws") and not host_is_loopback(self.hub_url) and not self.allow_insecure:
            raise ValueError(
                "refusing to talk to a hub off loopback without TLS; "
                "use https:// (or --allow-insecure on a trusted LAN)"
            )
        for url in self.backends:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"--backend must be an http(s):// URL, not {url!r}")
        if self.max_concurrency < 1:
            raise ValueError("--max-concurrency must be at least 1")

    @property
    def connect_url(self) -> str:
        base = self.hub_url.rstrip("/")
        base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + "/agent/connect"
