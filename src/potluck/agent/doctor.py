"""`potluck doctor agent`: what stands between this machine and serving the hub, each with its fix.

The checks reuse the agent's own code: backends are found and read by `agent.scan` (the catalog the
daemon uses), GPUs through the probes of `agent.gpu`, the key where `agent.identity` keeps it. The hub
is asked for ``/healthz`` once: its answer gives reachability, and its ``Date`` header the clock skew;
for ``https`` a TLS handshake with the system's trust store gives the protocol and the certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from potluck._shared.checkup import Check, Level, private_file, writable_dir
from potluck._shared.clock import Clock, SystemClock
from potluck._shared.paths import is_loopback, suggest_scheme
from potluck.agent.backends import Backend
from potluck.agent.gpu import (
    DEFAULT_TIMEOUT_S,
    NVIDIA_SMI_ARGS,
    ROCM_SMI_ARGS,
    ToolError,
    load_nvml,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
    run_tool,
    sample_nvml,
)
from potluck.agent.identity import ENROLMENT_FILE, KEY_FILE, enrolment
from potluck.agent.scan import scan_local
from potluck.agent.settings import AgentSettings
from potluck.protocol.metrics import GpuMetrics

CLOCK_SKEW_WARN_S = 5.0
"""Receipts and usage carry the hub's timestamps; beyond this the agent's logs no longer line up with them."""
CERT_EXPIRY_WARN_DAYS = 14
HUB_TIMEOUT_S = 5.0


async def agent_checks(settings: AgentSettings, *, clock: Clock | None = None) -> list[Check]:
    """Every agent-side check, in the order a person would fix them."""
    checks = files_checks(settings)
    checks += await backend_checks(settings)
    checks.append(await gpu_check())
    if settings.hub_url and "://" not in settings.hub_url:
        checks.append(
            Check("hub", Level.FAIL, f"{settings.hub_url} has no scheme", f"--hub {suggest_scheme(settings.hub_url)}")
        )
    elif settings.hub_url:
        checks += await hub_checks(settings.hub_url, clock or SystemClock())
    else:
        checks.append(Check("hub", Level.WARN, "no hub given: its reachability was not checked", "give --hub URL"))
    return checks


# -- files ------------------------------------------------------------------------------------------


def files_checks(settings: AgentSettings) -> list[Check]:
    data_dir = settings.data_dir
    checks = [writable_dir("data dir", data_dir)]
    absent = Check("agent key", Level.OK, f"no key in {data_dir} yet: the agent creates one (mode 0600) on first start")
    checks.append(private_file("agent key", data_dir / KEY_FILE, missing=absent))
    if settings.token_file is not None:
        checks.append(private_file("token file", settings.token_file))
    if settings.hub_url and (data_dir / KEY_FILE).exists():
        checks.append(_enrolment(settings))
    return checks


def _enrolment(settings: AgentSettings) -> Check:
    enrolled = enrolment(settings.data_dir, settings.hub_url)
    if enrolled is not None:
        return Check("enrolment", Level.OK, f"enrolled with {settings.hub_url} as agent {enrolled}")
    if settings.token or settings.token_file:
        given = "--token" if settings.token else "--token-file"
        return Check("enrolment", Level.OK, f"not enrolled with {settings.hub_url} yet; {given} enrols it on connect")
    return Check(
        "enrolment",
        Level.FAIL,
        f"not enrolled with {settings.hub_url} (no entry in {settings.data_dir / ENROLMENT_FILE}) and no --token",
        "create a token on the hub (`potluck agent-token create NAME`) and start the agent once with --token "
        "or --token-file",
    )


# -- backends -------------------------------------------------------------------------------------


async def backend_checks(settings: AgentSettings) -> list[Check]:
    backends = await scan_local(settings.scan_ports, settings.backends, detect=settings.detecting)
    if not backends:
        where = "configured" if not settings.detecting else "answering on loopback's well-known ports"
        return [
            Check(
                "backends",
                Level.FAIL,
                f"no backend {where}: this agent has nothing to serve",
                "start a local LLM server (Ollama, LM Studio, llama.cpp, vLLM...) or give --backend URL",
            )
        ]
    return [_backend_check(b) for b in backends]


def _backend_check(backend: Backend) -> Check:
    name = f"backend {backend.url}"
    if not backend.healthy:
        return Check(
            name,
            Level.FAIL,
            f"{backend.kind} backend at {backend.url} does not answer",
            f"start the server at {backend.url}, or fix or drop its --backend",
        )
    version = f" {backend.version}" if backend.version else ""
    if not backend.models:
        return Check(
            name, Level.WARN, f"{backend.kind}{version} answers but lists no model", "pull or load a model into it"
        )
    hot = sorted(m.id for m in backend.models if m.hot)
    cold = sorted(m.id for m in backend.models if not m.hot)
    listed = "; ".join(part for part in (_names("loaded", hot), _names("not loaded", cold)) if part)
    return Check(name, Level.OK, f"{backend.kind}{version}: {listed}")


def _names(label: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"{label}: {shown}"


# -- GPUs -------------------------------------------------------------------------------------------


async def gpu_check() -> Check:
    """What each GPU source sees: NVML (nvidia-ml-py), nvidia-smi and rocm-smi on PATH."""
    import shutil

    found: list[GpuMetrics] = []
    notes = []
    nvml = load_nvml()
    if nvml is None:
        notes.append("NVML: nvidia-ml-py is not installed")
    else:
        try:
            await asyncio.to_thread(nvml.nvmlInit)
        except nvml.NVMLError as exc:
            notes.append(f"NVML: {exc}")
        else:
            try:
                gpus = await asyncio.to_thread(sample_nvml, nvml)
            except ToolError as exc:
                gpus = []
                notes.append(str(exc))
            finally:
                with contextlib.suppress(nvml.NVMLError):
                    nvml.nvmlShutdown()
            notes.append(f"NVML: {len(gpus)} GPU(s)")
            found = found or gpus
    for tool, args, parse in (
        ("nvidia-smi", NVIDIA_SMI_ARGS, parse_nvidia_smi_csv),
        ("rocm-smi", ROCM_SMI_ARGS, parse_rocm_smi_json),
    ):
        path = shutil.which(tool)
        if path is None:
            notes.append(f"{tool}: not on PATH")
            continue
        try:
            gpus = parse(await run_tool(path, args, DEFAULT_TIMEOUT_S))
        except ToolError as exc:
            notes.append(f"{tool} ({path}): {exc}")
            continue
        notes.append(f"{tool} ({path}): {len(gpus)} GPU(s)")
        found = found or gpus
    sources = "; ".join(notes)
    if not found:
        return Check(
            "gpu",
            Level.WARN,
            f"no GPU visible ({sources}); the agent reports no GPU metrics and backends may run on the CPU",
            "install the GPU driver: NVIDIA's makes `nvidia-smi` list the GPU, AMD's ROCm provides `rocm-smi`",
        )
    listed = ", ".join(f"{g.name} ({g.memory_total_bytes / (1 << 30):.0f} GiB)" for g in found)
    return Check("gpu", Level.OK, f"{len(found)} GPU(s): {listed} ({sources})")


# -- the hub ----------------------------------------------------------------------------------------


def http_base(hub_url: str) -> str:
    base = hub_url.rstrip("/")
    return base.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


async def hub_checks(hub_url: str, clock: Clock, *, verify: bool = True) -> list[Check]:
    """Reachability, TLS (for https), plain HTTP off loopback, and clock skew against the hub.

    ``verify=False`` (the hub's own doctor, which reads its certificate from the file) skips checking
    the certificate against the trust store and the name."""
    base = http_base(hub_url)
    parts = urlsplit(base)
    host = parts.hostname or ""
    checks = []
    if parts.scheme == "http" and not is_loopback(host):
        checks.append(
            Check(
                "hub transport",
                Level.WARN,
                f"{base} is plain HTTP off loopback: the agent's traffic crosses the network in clear",
                "serve the hub over HTTPS (--tls-cert/--tls-key, or a TLS proxy) and use https://",
            )
        )
    if parts.scheme == "https":
        tls = await tls_check(host, parts.port or 443, verify=verify)
        checks.append(tls)
        if tls.level is Level.FAIL:
            return checks
    checks += await _health(base, clock, verify=verify)
    return checks


async def tls_check(host: str, port: int, *, verify: bool = True) -> Check:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(HUB_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "hub tls",
            Level.FAIL,
            f"the hub's certificate is not trusted: {exc.verify_message}",
            "give the hub a certificate from a public CA, or point SSL_CERT_FILE at the CA that signed it",
        )
    except ssl.SSLError as exc:
        hint = "; the hub may serve plain HTTP: try http://" if exc.reason == "WRONG_VERSION_NUMBER" else ""
        return Check("hub tls", Level.FAIL, f"TLS handshake with {host}:{port} failed ({exc.reason}){hint}", _fix_url())
    except (OSError, TimeoutError) as exc:
        return _unreachable(f"{host}:{port}", exc)
    try:
        tls: Any = writer.get_extra_info("ssl_object")
        version = tls.version()
        cert = tls.getpeercert() or {}  # empty when not verified
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    expires = ssl.cert_time_to_seconds(cert["notAfter"]) if "notAfter" in cert else None
    days = None if expires is None else int((expires - SystemClock().wall().timestamp()) // 86400)
    valid = f"certificate valid for {host}" if verify else "certificate not verified"
    valid += f", {days} days left" if days is not None else ""
    if version not in ("TLSv1.2", "TLSv1.3"):
        return Check("hub tls", Level.WARN, f"{version}, {valid}", "configure the hub's TLS for 1.2 or newer")
    if days is not None and days < CERT_EXPIRY_WARN_DAYS:
        return Check("hub tls", Level.WARN, f"{version}, {valid}", "renew the hub's certificate")
    return Check("hub tls", Level.OK, f"{version}, {valid}")


def _fix_url() -> str:
    return "check the --hub URL (scheme and port) against what the hub prints as `listening ...`"


def _unreachable(where: str, exc: BaseException) -> Check:
    if isinstance(exc, TimeoutError):
        why = f"no answer within {HUB_TIMEOUT_S:g} s"
    elif isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        why = os.strerror(exc.errno)  # a refused connect's own message is "Connect call failed (...)"
    else:
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    return Check(
        "hub",
        Level.FAIL,
        f"cannot reach the hub at {where}: {why}",
        "start the hub, or check the --hub URL, DNS and firewall between here and it",
    )


async def _health(base: str, clock: Clock, *, verify: bool) -> list[Check]:
    url = base + "/healthz"
    timeout = aiohttp.ClientTimeout(total=HUB_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=verify)) as http:
            sent = clock.wall().timestamp()
            async with http.get(url, allow_redirects=False) as resp:
                status, date = resp.status, resp.headers.get("Date")
                await resp.read()
            received = clock.wall().timestamp()
            ready = await _readiness(http, base) if status == 200 else None
    except aiohttp.ClientConnectorError as exc:
        return [_unreachable(f"{exc.host}:{exc.port}", exc.os_error)]
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [_unreachable(base, exc if isinstance(exc, TimeoutError) else OSError(str(exc) or type(exc).__name__))]
    if status != 200:
        reach = Check("hub", Level.FAIL, f"{url} answered {status}, not 200", f"is {base} a Potluck hub? {_fix_url()}")
    else:
        reach = Check("hub", Level.OK, f"{url} answered {status} in {(received - sent) * 1000:.0f} ms")
    return [reach, *([ready] if ready else []), clock_check(date, sent, received)]


async def _readiness(http: aiohttp.ClientSession, base: str) -> Check:
    """``/readyz``: whether the hub takes requests (its database answers, it is not shutting down)."""
    async with http.get(base + "/readyz", allow_redirects=False) as resp:
        status = resp.status
        try:
            body = msgspec.json.decode(await resp.read(), type=dict[str, object])
        except msgspec.DecodeError:
            body = {}
    if status == 200:
        agents = body.get("agents")
        return Check("hub ready", Level.OK, f"takes requests; {agents} agent(s) connected")
    why = body.get("status", f"status {status}")
    return Check(
        "hub ready",
        Level.WARN if why == "shutting_down" else Level.FAIL,
        f"the hub answers but is not ready: {why}",
        "see the hub's log; `potluck doctor hub` on its machine checks its database and files",
    )


def clock_check(date: str | None, sent: float, received: float) -> Check:
    """Skew from the hub's ``Date`` header (whole seconds) against the middle of the round trip."""
    if date is None:
        return Check("clock", Level.WARN, "the hub sent no Date header: clock skew unknown")
    try:
        hub_time = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return Check("clock", Level.WARN, f"the hub's Date header {date!r} is not a date: clock skew unknown")
    # Date is truncated to the second: the hub's clock read somewhere in [hub_time, hub_time + 1).
    skew = (sent + received) / 2 - (hub_time + 0.5)
    ahead = "ahead of" if skew >= 0 else "behind"
    summary = f"this machine's clock is {abs(skew):.1f} s {ahead} the hub's"
    if abs(skew) > CLOCK_SKEW_WARN_S + (received - sent) / 2:
        return Check(
            "clock", Level.WARN, summary, "turn on time sync here and on the hub (e.g. timedatectl set-ntp true)"
        )
    return Check("clock", Level.OK, summary)
