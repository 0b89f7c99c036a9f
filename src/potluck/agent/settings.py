"""Agent settings: one object, built once by the CLI from options and ``POTLUCK_AGENT_*`` variables.

Each field carries its help, option and environment variable (`potluck._shared.setting`): the CLI's
options and the table in docs/configuration.md are generated from them. The CLI imports this module
to build `potluck agent`'s options, so it stays light: the backend kinds are imported only to check one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from potluck._shared.logging import LOG_LEVELS
from potluck._shared.paths import default_data_dir, is_loopback, suggest_scheme
from potluck._shared.setting import setting
from potluck.agent.backoff import FAST_MAX_S, FAST_WINDOW_S, STABLE_AFTER_S


def host_is_loopback(url: str) -> bool:
    hostname = urlsplit(url).hostname
    return hostname is not None and is_loopback(hostname)


def parse_backend(spec: str) -> tuple[str, str | None]:
    """``URL`` or ``URL,kind=KIND`` → (URL, KIND or None); a kind the agent does not know is a ValueError."""
    url, _, rest = spec.partition(",")
    kind = None
    if rest:
        key, _, value = rest.partition("=")
        if key.strip() != "kind" or not value.strip():
            raise ValueError(f"--backend takes URL or URL,kind=KIND, not {spec!r}")
        kind = value.strip()
        from potluck.agent.backends.kinds import KINDS

        if kind not in KINDS:
            raise ValueError(f"unknown backend kind {kind!r} in {spec!r}; the kinds are {', '.join(sorted(KINDS))}")
    return url.strip(), kind


def backend_spec(spec: str) -> str:
    """A checked ``--backend`` value, as given."""
    url, _kind = parse_backend(spec)
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"a backend is an http(s):// URL, not {url!r}")
    return spec


def parse_ports(text: str) -> tuple[int, ...]:
    """``"8001, 9000"`` → ``(8001, 9000)``."""
    ports = []
    for part in text.split(","):
        if part.strip():
            try:
                port = int(part)
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not a port number") from None
            if not 0 < port < 65536:
                raise ValueError(f"{port} is not a port")
            ports.append(port)
    return tuple(ports)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    ENV_PREFIX: ClassVar[str] = "POTLUCK_AGENT_"

    hub_url: str = setting(
        option="--hub",
        env="POTLUCK_AGENT_HUB",
        metavar="URL",
        help="The hub: http://, https://, ws:// or wss:// (required to run).",
        details="The agent connects to `<url>/agent/connect` and remembers its enrolment under this exact "
        "string. Off loopback, `http://` and `ws://` are refused unless `--allow-insecure`; a URL without a "
        "scheme is a usage error that says which one to write.",
    )
    token: str | None = setting(
        None,
        help="One-time enrolment token; needed only until the hub has accepted this agent's key.",
        details="`pat-…`, from `potluck agent-token create` or `POST /admin/agent-tokens`. Sent only until this "
        "hub URL has accepted the agent's key; ignored afterwards.",
    )
    token_file: Path | None = setting(
        None,
        metavar="PATH",
        help="Read the enrolment token from this file (mode 0600) instead of --token.",
        details="The first line, stripped. A file that group or others may read is refused, and so is "
        "giving both `--token` and `--token-file`. The install script (`GET /install.sh`) keeps the token "
        "this way, so that it never appears on a command line.",
    )
    backends: tuple[str, ...] = setting(
        (),
        option="--backend",
        multiple=True,
        parse=backend_spec,
        metavar="URL[,kind=KIND]",
        default_text="none: local servers are auto-detected",
        help="A local LLM server (http:// or https://), optionally with its kind; repeatable.",
        details="KIND is one of `ollama`, `lmstudio`, `llamacpp`, `vllm`, `sglang`, `tgwui`, `koboldcpp`, `jan`, "
        "`localai`, `openai`; another is a usage error. Without it the agent fingerprints the server. A "
        "trailing `/v1` is accepted. The environment variable takes several separated by whitespace. A "
        "backend that has a model loaded serves it before one that does not.",
    )
    name: str | None = setting(
        None,
        default_text="the enrolment token's name",
        help="Display name in the hub's agent lists.",
        details="Without it the agent sends no name and the hub shows the name of the enrolment token the "
        "agent enrolled with.",
    )
    max_concurrency: int = setting(
        8,
        help="Requests this agent serves at once (at least 1).",
        details="The hub routes no more than this to it.",
    )
    data_dir: Path = setting(
        factory=lambda: default_data_dir("agent"),
        directory=True,
        default_text="$XDG_DATA_HOME/potluck/agent",
        help="Where the agent's key and its enrolments live.",
        details="Holds the Ed25519 private key `agent_key` (mode 0600) and `enrolment.json` (agent id per hub "
        "URL). Created if missing.",
    )
    drain_timeout: float = setting(
        30.0,
        help="On SIGTERM or SIGINT: seconds in-flight requests may run before the agent cancels them and exits.",
    )
    catalog_interval: float = setting(
        1.0,
        help="Seconds between reads of the backends' models, hot/cold state and load.",
        details="0.5 s while a request waits on a cold model.",
    )
    scan_ports: tuple[int, ...] = setting(
        (),
        parse=parse_ports,
        metavar="PORT,...",
        help="Extra loopback ports to probe for backends, comma-separated; turns auto-detection on.",
        details="Beside the well-known ones (11434, 1234, 8000, 8080, 30000, 5000, 5001, 1337).",
    )
    auto_detect: bool | None = setting(
        None,
        option="--auto/--no-auto",
        default_text="on when no --backend is given",
        help="Probe loopback for backends, and re-scan every --rescan-interval.",
        details="`--auto` / `--no-auto`: probe 127.0.0.1 on the well-known and `--scan-ports` ports and "
        "fingerprint what answers.",
    )
    rescan_interval: float = setting(
        30.0,
        help="Seconds between loopback scans.",
        details="A backend that appears or disappears changes what the agent serves without a reconnect.",
    )
    metrics_interval: float = setting(
        5.0,
        help="Seconds between LOAD reports to the hub.",
        details="GPU via NVML, else `nvidia-smi`, else `rocm-smi`; CPU and RAM via psutil.",
    )
    reconnect_min: float = setting(
        0.5,
        help="Base of the reconnect delay, in seconds: a retry waits between half of it and a cap that doubles "
        "with each failure.",
        details=f"For {FAST_WINDOW_S:g} s after losing a connection the hub had accepted, a retry waits between "
        f"half of it and max(it, {FAST_MAX_S:g} s) instead, so an agent is back within about a second of a "
        f"restarted hub listening again. Two connections in a row that lasted under {STABLE_AFTER_S:g} s (a "
        "hub in a crash loop, two agents sharing a key) end the fast retries.",
    )
    reconnect_max: float = setting(30.0, help="Upper bound of the reconnect delay's cap, in seconds.")
    allow_insecure: bool = setting(
        False, help="Allow plain http:// or ws:// to a hub that is not on loopback (trusted LAN only)."
    )
    log_level: str = setting("info", choices=LOG_LEVELS, help="Logging level, to standard error.")

    def validate(self) -> None:
        scheme = urlsplit(self.hub_url).scheme
        if "://" not in self.hub_url:
            raise ValueError(f"--hub needs a scheme: did you mean {suggest_scheme(self.hub_url)}?")
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"--hub must be an http(s):// or ws(s):// URL, not {self.hub_url!r}")
        if scheme in ("http", "ws") and not host_is_loopback(self.hub_url) and not self.allow_insecure:
            raise ValueError(
                "refusing to talk to a hub off loopback without TLS; "
                "use https:// (or --allow-insecure on a trusted LAN)"
            )
        for spec in self.backends:
            backend_spec(spec)
        if self.token is not None and self.token_file is not None:
            raise ValueError("give --token or --token-file, not both")
        if self.max_concurrency < 1:
            raise ValueError("--max-concurrency must be at least 1")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("--reconnect-min must be positive and at most --reconnect-max")

    def with_token_from_file(self) -> AgentSettings:
        """These settings with ``token`` read from ``token_file`` (unchanged without one); ValueError if unsafe."""
        if self.token_file is None:
            return self
        try:
            mode = self.token_file.stat().st_mode
            text = self.token_file.read_text()
        except OSError as exc:
            raise ValueError(f"--token-file {self.token_file}: {exc.strerror}") from None
        if mode & 0o077:
            raise ValueError(
                f"--token-file {self.token_file} may be read by others (mode {mode & 0o777:04o}): chmod 600 it"
            )
        token = text.strip().partition("\n")[0].strip()
        if not token:
            raise ValueError(f"--token-file {self.token_file} is empty")
        return replace(self, token=token)

    @property
    def detecting(self) -> bool:
        return self.auto_detect if self.auto_detect is not None else (not self.backends or bool(self.scan_ports))

    @property
    def connect_url(self) -> str:
        base = self.hub_url.rstrip("/")
        base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + "/agent/connect"
