"""Hub settings: one object, built once by the CLI from options and ``POTLUCK_HUB_*`` variables.

Each field carries its help, option and environment variable (`potluck._shared.setting`): the CLI's
options and the table in docs/configuration.md are generated from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from potluck._shared.logging import LOG_LEVELS
from potluck._shared.paths import default_data_dir, is_loopback
from potluck._shared.setting import setting
from potluck.hub.scoring import Policy, ScoreWeights

# What GET /install.sh may bake into a shell script: no quotes, spaces, `$` or backslashes can pass.
PUBLIC_URL = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")


class SignupMode(StrEnum):
    """Who may create an account from a browser (``--signup``)."""

    INVITE = "invite"
    """Only with a group's invite link (``/join/<code>``), joining that group."""
    OPEN = "open"
    """Anyone who reaches the hub, at ``/signup``; invite links work as well."""
    CLOSED = "closed"
    """Nobody: admins create accounts; invite links only add signed-in users to a group."""


@dataclass(frozen=True, slots=True)
class HubSettings:
    ENV_PREFIX: ClassVar[str] = "POTLUCK_HUB_"

    host: str = setting(
        "127.0.0.1",
        help="Address to bind.",
        details="Off loopback the hub refuses to start without TLS (`--tls-cert` and `--tls-key`) unless "
        "`--allow-insecure-http` is set.",
    )
    port: int = setting(
        8642,
        help="Port to bind; 0 picks a free port.",
        details="The hub prints `listening <url>` once it is bound.",
    )
    data_dir: Path = setting(
        factory=lambda: default_data_dir("hub"),
        directory=True,
        default_text="$XDG_DATA_HOME/potluck/hub",
        help="Where the SQLite database, the admin token hash and the receipt signing key live.",
        details="Holds `potluck.db`, `admin_token.sha256` and `hub-signing-key` (see "
        "[Data directories](#data-directories)). Created if missing.",
    )
    database_url: str | None = setting(
        None,
        metavar="URL",
        default_text="sqlite+aiosqlite:///<data-dir>/potluck.db",
        help="SQLAlchemy async URL of the database, instead of the SQLite file in --data-dir.",
        details="`postgresql://user@host/db` uses asyncpg (`pip install 'potluck[postgres]'`). A SQLite file is "
        "migrated to the newest schema on start; PostgreSQL, shared by replicas, only by `potluck hub migrate` "
        "(the hub refuses to start on an older schema).",
    )
    admin_token: str | None = setting(
        None,
        env="POTLUCK_ADMIN_TOKEN",
        default_text="generated on first start",
        help="Token for the admin API.",
        details="When given, it is used as is and nothing is stored. When not given, the hash in "
        "`<data_dir>/admin_token.sha256` is used; on first start a `padm-…` token is generated, printed once, "
        "and only its SHA-256 hash is kept. The variable is the one `potluck admin ...` reads too.",
    )
    max_queue: int = setting(
        256,
        help="Requests that may wait for a free agent slot at once, all models together.",
        details="Beyond it: 503 `server_overloaded`.",
    )
    queue_timeout: float = setting(
        30.0,
        help="Longest wait in the queue, in seconds.",
        details="Beyond it: 503 `server_overloaded`.",
    )
    max_body_bytes: int = setting(
        32 * 1024 * 1024,
        help="Largest client request body in bytes (32 MiB); larger ones get 413 request_too_large.",
        details="Agents never send bodies: their WebSocket messages are bounded by `--credit-window` plus 1.06 MiB.",
    )
    heartbeat_interval: float = setting(
        5.0,
        help="Seconds between the hub's pings to each agent.",
        details="Sent to agents in `WELCOME`; they ping at the same cadence.",
    )
    heartbeat_timeout: float = setting(
        15.0,
        help="Seconds of silence after which the hub drops an agent (and an agent the hub).",
        details="Must be greater than `heartbeat_interval`.",
    )
    first_byte_timeout: float = setting(
        600.0,
        help="Seconds an attempt may take to produce the agent's response head and first body bytes.",
        details="One budget, per attempt, for the head and the first body bytes (or the end) together, counted "
        "from when the request is sent to the agent; time in the queue does not count (cold model loads can "
        "take a minute). Past it the agent is told to cancel, the request is not retried, and the client gets "
        "504 `upstream_timeout`.",
    )
    idle_timeout: float = setting(
        300.0,
        help="Seconds a response may go without a byte once it has started.",
        details="Then the response ends with an `upstream_timeout` error.",
    )
    max_attempts: int = setting(
        3,
        help="Agents tried for one request, on retriable failures before the first byte only.",
    )
    aliases: tuple[str, ...] = setting(
        (),
        option="--model-alias",
        multiple=True,
        metavar="NAME=MODEL[|MODEL...]",
        default_text="none",
        help="A model name the hub answers for every group, standing for concrete models (most preferred "
        "first); repeatable.",
        details="Groups' own aliases win. A `claude-*` name that nothing names exactly is looked up by its family: "
        "`--model-alias sonnet=qwen3-coder` serves Claude Code's `claude-sonnet-4-5-20250929`.",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        option="--cors-origin",
        multiple=True,
        metavar="ORIGIN",
        default_text="none: CORS is off",
        help="A browser origin allowed to call /v1/* ('*': any); repeatable.",
        details="Preflights get 204 with what was asked for; answers carry `Access-Control-Allow-Origin` and "
        "expose `x-request-id`, `retry-after` and the rate-limit headers. The admin and account APIs never do.",
    )
    restart_grace_s: float = setting(
        30.0,
        help="After a start, seconds during which a model the previously connected agents served answers 503 "
        "model_unavailable with Retry-After (not 404) until they are back.",
    )
    scheduler_policy: str = setting(
        Policy.POTLUCK.value,
        choices=tuple(p.value for p in Policy),
        help="How agents are picked: potluck (hot model first, then load, latency, reliability), "
        "or least_loaded / round_robin to compare against.",
        details="See [architecture.md](architecture.md#scheduler).",
    )
    score_weights: str = setting(
        "",
        option="--score-weight",
        multiple=True,
        metavar="NAME=VALUE",
        default_text="the built-in weights",
        help="Weight of one score term (hot, alias, owner, cold, load, latency, reliability, gpu) over its "
        "default; repeatable.",
        details="In the variable: `NAME=VALUE,...`. Unknown names or negative values are a usage error.",
    )
    queue_user_share: float = setting(
        0.5,
        help="Largest share of the wait queue one user may hold.",
        details="Beyond it: 429 `rate_limit_exceeded`.",
    )
    eject_failures: int = setting(5, help="Consecutive local-origin failures that eject an agent for a model.")
    eject_base_s: float = setting(
        30.0, help="First ejection's length in seconds; each further one doubles it, up to ten times this."
    )
    eject_max_percent: float = setting(50.0, help="Never eject more than this share of a model's agents at once.")
    retry_budget_percent: float = setting(
        20.0, help="Retries in progress may be at most this share of the requests in flight (at least 3)."
    )
    platform_fee_percent: float = setting(
        0.0,
        help="Share of every credits charge the platform keeps; the agent's owner earns the rest.",
        details="Rounded down.",
    )
    signing_key_file: Path | None = setting(
        None,
        default_text="<data-dir>/hub-signing-key",
        help="Ed25519 private key that signs receipts; created with mode 0600 on first start.",
        details="32 raw bytes; a file readable by group or others is refused. Back it up with the database: "
        "receipts verify only against its public key.",
    )
    reprice_interval: float = setting(10.0, help="Seconds between recomputations of the dynamic price multipliers.")
    credit_window: int = setting(
        256 * 1024,
        help="Per-stream flow-control window sent to agents, in bytes (256 KiB).",
        details="See [protocol.md](protocol.md#backpressure-the-credit-window).",
    )
    shutdown_timeout: float = setting(
        30.0,
        help="On SIGTERM or SIGINT: seconds in-flight requests may run before the hub closes.",
        details="Also sent to agents as `DRAIN.deadline_s`.",
    )
    header_timeout: float = setting(
        10.0,
        help="Seconds a client has to send a request's headers, from its connection or its first byte after a pause.",
        details="Then the connection is closed (slowloris). TLS handshakes get the same deadline.",
    )
    body_timeout: float = setting(
        30.0,
        help="Seconds a request body may go without a byte before the hub closes the connection.",
        details="A slow body that keeps coming is never cut off.",
    )
    max_pending_connections_per_ip: int = setting(
        64,
        help="Connections one client address may keep open a second or more without sending a whole request "
        "(0: no cap).",
        details="Beyond it the excess is closed and new ones refused; fast bursts are never refused.",
    )
    keepalive_timeout: float = setting(
        75.0,
        help="Seconds an idle keep-alive connection stays open between requests.",
    )
    tls_cert: Path | None = setting(
        None,
        help="PEM certificate (chain) file; with --tls-key the hub serves HTTPS.",
        details="Agents then connect with `wss://`.",
    )
    tls_key: Path | None = setting(None, help="PEM private key file; give both --tls-cert and --tls-key, or neither.")
    allow_insecure_http: bool = setting(
        False, help="Serve plain HTTP on a non-loopback address: only behind a TLS-terminating proxy."
    )
    log_level: str = setting("info", choices=LOG_LEVELS, help="Logging level, to standard error.")
    public_url: str | None = setting(
        None,
        metavar="URL",
        default_text="the scheme and Host of each request",
        help="The hub's URL as agents reach it (https://hub.example); baked into GET /install.sh.",
        details="Without it the script names the URL the request came to (its scheme and `Host` header, which "
        "must be a plain host and port). Behind a TLS-terminating proxy set it: the hub does not read "
        "`X-Forwarded-*`. Only `http(s)://host[:port][/path]` is accepted.",
    )
    agent_wheel: Path | None = setting(
        None,
        metavar="PATH",
        default_text="packed from the running installation",
        help="The potluck-<version>-py3-none-any.whl file to serve at /download/ for GET /install.sh.",
        details="Without it the hub packs the installed potluck package and its metadata into a wheel on the "
        "first download and keeps it in memory. The Docker image serves the wheel it was built from.",
    )
    spot_check_percent: float = setting(
        1.0,
        help="Spot checks may use at most this share (%) of a group's requests for a model; 0 turns them off.",
        details="Each check sends one short greedy request to every agent serving the model in the group; "
        "none is billed.",
    )
    spot_check_interval_s: float = setting(
        300.0, help="At least this many seconds between two spot checks of the same model in the same group."
    )
    spot_check_strikes: int = setting(
        3,
        help="Flag an agent for a model once this many of its last `--spot-check-window` checks disagreed.",
    )
    spot_check_window: int = setting(5, help="Judged spot checks remembered per agent, model and group.")
    spot_check_similarity: float = setting(
        0.8,
        help="Two answers' first words agree at this similarity (0..1, difflib's ratio) or above.",
    )
    throughput_strikes: int = setting(
        5,
        help="Park an agent for a model once this many of its last `--throughput-window` measured requests "
        "ran below the group's minimum tokens/s.",
    )
    throughput_window: int = setting(10, help="Measured requests remembered per agent, model and group.")
    throughput_min_tokens: int = setting(
        32, help="A request with fewer completion tokens says too little about speed to be measured."
    )
    throughput_cool_down_s: float = setting(
        600.0, help="A parked agent is back in routing for the model after this many seconds."
    )
    signup: str = setting(
        SignupMode.INVITE.value,
        choices=tuple(m.value for m in SignupMode),
        help="Who may create an account in a browser: `invite`, `open` or `closed`.",
        details="`invite`: a group's invite link (`/join/<code>`) creates an account and joins the group in one "
        "step. `open`: anyone who reaches the hub may also sign up at `/signup` (joining no group). `closed`: "
        "only admins create accounts (`POST /admin/users`); invite links then only add signed-in users.",
    )
    agent_max_pending_handshakes_per_ip: int = setting(
        4,
        help="Agent connections one address may have in their handshake at once; more are rejected.",
        details="An IPv6 /64 counts as one address. Rejected with `REJECT too_many_handshakes` (the agent retries "
        "with backoff) and WebSocket close code 1008. Behind a reverse proxy every agent has the proxy's address: "
        "raise it there.",
    )
    agent_max_pending_handshakes: int = setting(
        256,
        help="Agent connections that may be in their handshake at once, all addresses together.",
        details="Beyond it `REJECT too_many_handshakes` and close code 1008, as for one address. With "
        "the message limit (1 MiB + the credit window + 64 KiB), it bounds what unauthenticated agent "
        "connections can make the hub hold.",
    )
    agent_max_models: int = setting(
        1024,
        help="Models one agent may list; a longer catalog is rejected.",
        details="In the `HELLO` (`REJECT catalog_too_large`) or a later `MODELS` (close code 1008).",
    )
    agent_max_string_length: int = setting(
        256,
        help="Longest model name, backend URL or other string in an agent's catalog, in characters.",
        details="A longer one rejects the catalog like `--agent-max-models`.",
    )
    agent_max_control_frames_per_s: float = setting(
        20.0,
        help="Connection-level frames (MODELS, STATE, LOAD, PING) an agent may send per second, on average.",
        details="Bursts of ten seconds' worth pass; beyond, the hub closes the connection "
        "(`REJECT rate_limited`, close code 1008).",
    )
    # -- cluster mode (several replicas behind a load balancer; hub/cluster*.py) ------------------------------------
    redis_url: str | None = setting(
        None,
        metavar="URL",
        help="Redis URL (redis://host:port/db) that makes this hub one replica of a cluster.",
        details="With it the replicas share their leases, which replica holds which agent's tunnel, a load view, "
        "cluster-wide rate limits and cache invalidations through Redis; give every replica the same "
        "`--database-url` (PostgreSQL) and `--cluster-secret`. Token chunks never pass through Redis: a replica "
        "forwards a request to the replica holding the agent over a peer WebSocket. See docs/operations.md.",
    )
    cluster_secret: str | None = setting(
        None,
        help="Secret shared by the replicas of a cluster; it authenticates their peer links.",
        details="Required with `--redis-url`. Only a key derived from it (HMAC-SHA256) is ever sent, compared in "
        "constant time.",
    )
    advertise_url: str | None = setting(
        None,
        metavar="URL",
        default_text="the URL the hub listens on",
        help="The URL other replicas reach this one at for peer links (cluster mode).",
        details="Needed when the replica listens on 0.0.0.0 or behind NAT: e.g. `http://hub-1.internal:8642`.",
    )
    replica_lease_s: float = setting(
        5.0,
        help="Seconds a replica's lease lives in Redis without a heartbeat (cluster mode).",
        details="A replica renews its lease three times per lease; one silent for longer, with no peer link up, is "
        "dead to the others: they stop forwarding to it and sweep its credit holds. Peer links are pinged once "
        "per lease, and a request waits up to a lease for a link that is down.",
    )

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "hub-signing-key"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'potluck.db'}"

    def validate(self) -> None:
        """Refuse settings the hub cannot run with; the message names the option (a usage error)."""
        self._validate_network()
        self._validate_connection_limits()
        self.parsed_model_aliases()
        self._validate_scheduling()
        self._validate_claims()
        if not 0 <= self.platform_fee_percent <= 100:
            raise ValueError("--platform-fee-percent must be in 0..100")
        if self.reprice_interval <= 0:
            raise ValueError("--reprice-interval must be positive")
        if self.public_url is not None and not PUBLIC_URL.fullmatch(self.public_url):
            raise ValueError(f"--public-url must be http(s)://host[:port][/path], not {self.public_url!r}")
        if self.signup not in {m.value for m in SignupMode}:
            raise ValueError(f"unknown --signup {self.signup}")
        if self.redis_url is not None and not self.cluster_secret:
            raise ValueError("--redis-url needs --cluster-secret (the replicas' peer links authenticate with it)")
        if self.replica_lease_s <= 0:
            raise ValueError("--replica-lease-s must be positive")

    def _validate_network(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("--port must be in 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_cert is None and not is_loopback(self.host) and not self.allow_insecure_http:
            raise ValueError(
                f"refusing plain HTTP on {self.host}: API keys would cross the network in clear. "
                "Give --tls-cert/--tls-key, or --allow-insecure-http behind a TLS-terminating proxy."
            )
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("--heartbeat-timeout must exceed --heartbeat-interval")
        if self.credit_window < 1:
            raise ValueError("--credit-window must be at least 1 byte")

    def _validate_scheduling(self) -> None:
        if self.scheduler_policy not in {p.value for p in Policy}:
            raise ValueError(f"unknown --scheduler-policy {self.scheduler_policy}")
        ScoreWeights.parse(self.score_weights)
        if not 0 < self.queue_user_share <= 1:
            raise ValueError("--queue-user-share must be in (0, 1]")
        if self.eject_failures < 1 or self.eject_base_s <= 0 or not 0 <= self.eject_max_percent <= 100:
            raise ValueError("--eject-failures >= 1, --eject-base-s > 0 and --eject-max-percent in 0..100")
        if not 0 <= self.retry_budget_percent <= 100:
            raise ValueError("--retry-budget-percent must be in 0..100")

    def _validate_claims(self) -> None:
        if not 0 <= self.spot_check_percent <= 100 or self.spot_check_interval_s < 0:
            raise ValueError("--spot-check-percent must be in 0..100 and --spot-check-interval-s >= 0")
        if not 1 <= self.spot_check_strikes <= self.spot_check_window:
            raise ValueError("--spot-check-strikes must be in 1..--spot-check-window")
        if not 0 < self.spot_check_similarity <= 1:
            raise ValueError("--spot-check-similarity must be in (0, 1]")
        if not 1 <= self.throughput_strikes <= self.throughput_window:
            raise ValueError("--throughput-strikes must be in 1..--throughput-window")
        if self.throughput_min_tokens < 1 or self.throughput_cool_down_s <= 0:
            raise ValueError("--throughput-min-tokens >= 1 and --throughput-cool-down-s > 0")

    def parsed_model_aliases(self) -> dict[str, tuple[str, ...]]:
        """``--model-alias`` as name -> concrete models; ValueError naming a malformed one."""
        aliases: dict[str, tuple[str, ...]] = {}
        for spec in self.aliases:
            name, _, targets = spec.partition("=")
            models = tuple(m.strip() for m in targets.split("|") if m.strip())
            if not name.strip() or not models:
                raise ValueError(f"--model-alias {spec!r}: expected NAME=MODEL[|MODEL...]")
            aliases[name.strip()] = models
        return aliases

    def _validate_connection_limits(self) -> None:
        if min(self.header_timeout, self.body_timeout, self.keepalive_timeout) <= 0:
            raise ValueError("--header-timeout, --body-timeout and --keepalive-timeout must be positive")
        if self.max_pending_connections_per_ip < 0:
            raise ValueError("--max-pending-connections-per-ip must be 0 (no cap) or more")
        if self.agent_max_pending_handshakes_per_ip < 1 or self.agent_max_models < 1:
            raise ValueError("--agent-max-pending-handshakes-per-ip and --agent-max-models must be at least 1")
        if self.agent_max_string_length < 16 or self.agent_max_control_frames_per_s <= 0:
            raise ValueError("--agent-max-string-length must be 16 or more, --agent-max-control-frames-per-s positive")
