"""Hub settings: one object, built once by the CLI from options and ``POTLUCK_HUB_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from potluck._shared.paths import default_data_dir, is_loopback
from potluck.hub.scoring import Policy, ScoreWeights


@dataclass(frozen=True, slots=True)
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 8642
    data_dir: Path = field(default_factory=lambda: default_data_dir("hub"))
    database_url: str | None = None
    """SQLAlchemy URL; default: the SQLite file ``potluck.db`` in ``data_dir``."""
    admin_token: str | None = None
    max_queue: int = 256
    queue_timeout: float = 30.0
    max_body_bytes: int = 32 * 1024 * 1024
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    first_byte_timeout: float = 600.0
    """Seconds to wait for an agent's first response byte (cold model loads can take a minute)."""
    idle_timeout: float = 300.0
    """Seconds a response may go without a byte before the hub gives up on it."""
    max_attempts: int = 3
    scheduler_policy: str = "potluck"
    """``potluck`` (hot model first, then load, latency, reliability), ``least_loaded`` or ``round_robin``."""
    score_weights: str = ""
    """``NAME=VALUE,...`` over the default score weights (see docs/architecture.md)."""
    queue_user_share: float = 0.5
    """Largest share of the wait queue one user may hold."""
    eject_failures: int = 5
    """Consecutive local-origin failures that eject an agent for a model."""
    eject_base_s: float = 30.0
    """First ejection's length; each further one doubles it, up to ten times this."""
    eject_max_percent: float = 50.0
    """Never eject more than this share of a model's agents."""
    retry_budget_percent: float = 20.0
    """Retries in progress may be at most this share of the requests in flight (at least 3)."""
    platform_fee_percent: float = 0.0
    """Share of every credits charge the platform keeps; the agent's owner earns the rest."""
    signing_key_file: Path | None = None
    """Ed25519 key that signs receipts; default ``hub-signing-key`` in ``data_dir`` (made on first start, 0600)."""
    reprice_interval: float = 10.0
    """Seconds between recomputations of the dynamic price multipliers."""
    credit_window: int = 256 * 1024
    shutdown_timeout: float = 30.0
    header_timeout: float = 10.0
    """Seconds a client has to send a request's headers, from its connection or its first byte after a pause."""
    body_timeout: float = 30.0
    """Seconds a request body may go without a byte before the hub closes the connection."""
    max_pending_connections_per_ip: int = 64
    """Connections one client address may keep open a second or more without sending a whole request; beyond
    it the excess is closed and new ones refused (0: no cap)."""
    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open between requests."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_insecure_http: bool = False
    """Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)."""
    log_level: str = "info"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "hub-signing-key"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'potluck.db'}"

    def validate(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_cert is None and not is_loopback(self.host) and not self.allow_insecure_http:
            raise ValueError(
                f"refusing plain HTTP on {self.host}: API keys would cross the network in clear. "
                "Give --tls-cert/--tls-key, or --allow-insecure-http behind a TLS-terminating proxy."
            )
        if self.scheduler_policy not in {p.value for p in Policy}:
            raise ValueError(f"unknown --scheduler-policy {self.scheduler_policy}")
        ScoreWeights.parse(self.score_weights)
        if not 0 < self.queue_user_share <= 1:
            raise ValueError("--queue-user-share must be in (0, 1]")
        if self.eject_failures < 1 or self.eject_base_s <= 0 or not 0 <= self.eject_max_percent <= 100:
            raise ValueError("--eject-failures >= 1, --eject-base-s > 0 and --eject-max-percent in 0..100")
        if not 0 <= self.platform_fee_percent <= 100:
            raise ValueError("--platform-fee-percent must be in 0..100")
        if self.reprice_interval <= 0:
            raise ValueError("--reprice-interval must be positive")
        if not 0 <= self.retry_budget_percent <= 100:
            raise ValueError("--retry-budget-percent must be in 0..100")
        self._validate_connection_limits()
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("--heartbeat-timeout must exceed --heartbeat-interval")

    def _validate_connection_limits(self) -> None:
        if min(self.header_timeout, self.body_timeout, self.keepalive_timeout) <= 0:
            raise ValueError("--header-timeout, --body-timeout and --keepalive-timeout must be positive")
        if self.max_pending_connections_per_ip < 0:
            raise ValueError("--max-pending-connections-per-ip must be 0 (no cap) or more")
