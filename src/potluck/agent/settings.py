"""Agent settings: one object, built once by the CLI from options and ``POTLUCK_AGENT_*`` variables."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from potluck._shared.paths import default_data_dir, is_loopback


def host_is_loopback(url: str) -> bool:
    hostname = urlsplit(url).hostname
    return hostname is not None and is_loopback(hostname)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    hub_url: str
    token: str | None = None
    """One-time enrolment token; needed only until the hub has accepted this agent's key."""
    backends: tuple[str, ...] = ()
    name: str = field(default_factory=socket.gethostname)
    max_concurrency: int = 8
    data_dir: Path = field(default_factory=lambda: default_data_dir("agent"))
    drain_timeout: float = 30.0
    catalog_interval: float = 1.0
    """Seconds between reads of the backends' models and load (0.5 s while a request waits on a cold model)."""
    scan_ports: tuple[int, ...] = ()
    """Extra loopback ports to probe for backends, beside the well-known ones."""
    auto_detect: bool | None = None
    """Probe loopback for backends; default: on when no --backend is given."""
    rescan_interval: float = 30.0
    metrics_interval: float = 5.0
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
        for spec in self.backends:
            url, _kind = parse_backend(spec)
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"--backend must be an http(s):// URL, not {url!r}")
        if self.max_concurrency < 1:
            raise ValueError("--max-concurrency must be at least 1")

    @property
    def detecting(self) -> bool:
        return self.auto_detect if self.auto_detect is not None else (not self.backends or bool(self.scan_ports))

    @property
    def connect_url(self) -> str:
        base = self.hub_url.rstrip("/")
        base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + "/agent/connect"


def parse_backend(spec: str) -> tuple[str, str | None]:
    """``URL`` or ``URL,kind=KIND`` → (URL, KIND or None)."""
    url, _, rest = spec.partition(",")
    kind = None
    if rest:
        key, _, value = rest.partition("=")
        if key.strip() != "kind" or not value.strip():
            raise ValueError(f"--backend takes URL or URL,kind=KIND, not {spec!r}")
        kind = value.strip()
    return url.strip(), kind
