"""Host and GPU metrics: CPU and RAM from psutil, GPUs from NVML, nvidia-smi or rocm-smi.

`MetricsProbe` picks the best GPU source once, on the first sample, in the order NVML → nvidia-smi →
rocm-smi, and keeps it. A source that fails later yields a sample with no GPUs, never an exception.
The vendor tools run as subprocesses under a timeout and never block the event loop; NVML runs in a
worker thread. The parsers are pure functions so they can be tested on recorded outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import re
import shutil
import signal
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar, cast

import psutil

from potluck.protocol.metrics import GpuMetrics, HostMetrics, MetricsSource

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIB = 1 << 20
# A healthy nvidia-smi or rocm-smi answers in well under a second; a wedged driver makes them hang for minutes.
DEFAULT_TIMEOUT_S = 5.0
# Only this much of a tool's stderr goes to the debug log.
_STDERR_LOG_LIMIT = 500

NVIDIA_SMI_ARGS = (
    "--query-gpu=index,name,uuid,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,power.limit",
    "--format=csv,noheader,nounits",
)
ROCM_SMI_ARGS = (
    "--showuse",
    "--showmemuse",
    "--showmeminfo",
    "vram",
    "--showtemp",
    "--showpower",
    "--showmaxpower",
    "--showproductname",
    "--showuniqueid",
    "--json",
)
_NVIDIA_SMI_COLUMNS = 9


class NvmlUtilization(Protocol):
    @property
    def gpu(self) -> int: ...


class NvmlMemory(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def used(self) -> int: ...


class NvmlModule(Protocol):
    """The part of ``pynvml`` (package ``nvidia-ml-py``) the probe uses; tests pass a fake."""

    @property
    def NVMLError(self) -> type[Exception]: ...
    @property
    def NVML_TEMPERATURE_GPU(self) -> int: ...

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> object: ...
    def nvmlDeviceGetName(self, handle: object, /) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: object, /) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: object, /) -> NvmlUtilization: ...
    def nvmlDeviceGetMemoryInfo(self, handle: object, /) -> NvmlMemory: ...
    def nvmlDeviceGetTemperature(self, handle: object, sensor: int, /) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: object, /) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object, /) -> int: ...


class ToolError(Exception):
    """A vendor tool could not be run, timed out, or printed nothing usable."""


def load_nvml() -> NvmlModule | None:
    """``pynvml`` if it is installed; whether a driver is there is found out later, by ``nvmlInit``."""
    try:
        module = importlib.import_module("pynvml")
    except ImportError:
        return None
    return cast("NvmlModule", module)


class MetricsProbe:
    """Samples the host and its GPUs.

    ``nvml``, ``nvidia_smi`` and ``rocm_smi`` are the sources it may use; ``None`` means that source is
    not there. `from_system` fills them in from what is installed.
    """

    def __init__(
        self,
        *,
        nvml: NvmlModule | None,
        nvidia_smi: str | None,
        rocm_smi: str | None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._nvml = nvml
        self._nvidia_smi = nvidia_smi
        self._rocm_smi = rocm_smi
        self._timeout = timeout
        self._source: MetricsSource | None = None
        self._nvml_initialised = False
        self._lock = asyncio.Lock()
        # psutil measures CPU use between two calls; this first one starts the interval.
        psutil.cpu_percent(interval=None)

    @classmethod
    def from_system(cls, *, timeout: float = DEFAULT_TIMEOUT_S) -> MetricsProbe:
        return cls(
            nvml=load_nvml(),
            nvidia_smi=shutil.which("nvidia-smi"),
            rocm_smi=shutil.which("rocm-smi"),
            timeout=timeout,
        )

    @property
    def source(self) -> MetricsSource | None:
        """The GPU source picked by the first sample; ``None`` before it."""
        return self._source

    async def sample(self) -> HostMetrics:
        async with self._lock:
            if self._source is None:
                self._source = await self._detect()
                log.info("GPU metrics source: %s", self._source)
            gpus = await self._sample_gpus(self._source)
        source = self._source if gpus else "none"
        cpu_pct = psutil.cpu_percent(interval=None)
        ram = psutil.virtual_memory()
        return HostMetrics(
            cpu_pct=float(cpu_pct),
            ram_used_bytes=int(ram.total - ram.available),
            ram_total_bytes=int(ram.total),
            gpus=gpus,
            source=source,
        )

    async def aclose(self) -> None:
        """Release NVML, if the probe initialised it."""
        async with self._lock:
            nvml = self._nvml
            if nvml is not None and self._nvml_initialised:
                self._nvml_initialised = False
                with contextlib.suppress(nvml.NVMLError):
                    await asyncio.to_thread(nvml.nvmlShutdown)

    async def _detect(self) -> MetricsSource:
        if self._nvml is not None and await asyncio.to_thread(self._init_nvml, self._nvml):
            return "nvml"
        for source in ("nvidia-smi", "rocm-smi"):
            try:
                gpus = await self._sample_gpus_or_raise(source)
            except ToolError as exc:
                log.debug("%s is not usable: %s", source, exc)
                continue
            if gpus:
                return source
        return "none"

    def _init_nvml(self, nvml: NvmlModule) -> bool:
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            log.debug("NVML is not usable: %s", exc)
            return False
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.debug("NVML sees no devices: %s", exc)
            count = 0
        if count > 0:
            self._nvml_initialised = True
            return True
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
        return False

    async def _sample_gpus(self, source: MetricsSource) -> list[GpuMetrics]:
        try:
            return await self._sample_gpus_or_raise(source)
        except ToolError as exc:
            log.warning("could not read GPU metrics from %s: %s", source, exc)
            return []

    async def _sample_gpus_or_raise(self, source: MetricsSource) -> list[GpuMetrics]:
        if source == "nvml" and self._nvml is not None:
            return await asyncio.to_thread(sample_nvml, self._nvml)
        if source == "nvidia-smi" and self._nvidia_smi is not None:
            return parse_nvidia_smi_csv(await run_tool(self._nvidia_smi, NVIDIA_SMI_ARGS, self._timeout))
        if source == "rocm-smi" and self._rocm_smi is not None:
            return parse_rocm_smi_json(await run_tool(self._rocm_smi, ROCM_SMI_ARGS, self._timeout))
        return []


async def run_tool(executable: str, args: tuple[str, ...], timeout: float) -> str:
    """Run a vendor tool and return its stdout; its exit status is ignored, since some print valid
    output and still exit non-zero (rocm-smi does when one GPU of several fails a query)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so a timeout can kill whatever it started too.
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError(f"cannot run {executable}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise ToolError(f"{executable} did not answer within {timeout:g} s") from None
    except BaseException:
        _kill_group(proc)
        await proc.wait()
        raise
    if proc.returncode != 0:
        log.debug("%s exited %s: %s", executable, proc.returncode, stderr[:_STDERR_LOG_LIMIT])
    return stdout.decode("utf-8", errors="replace")


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups
            proc.kill()


# -- NVML ---------------------------------------------------------------------------------------------


def sample_nvml(nvml: NvmlModule) -> list[GpuMetrics]:
    """Read every GPU through NVML (blocking: run it in a thread). A field the GPU does not support
    (``NVMLError_NotSupported``, e.g. power on many GeForce cards, memory on a GB10) is left unknown."""
    error = nvml.NVMLError
    try:
        count = nvml.nvmlDeviceGetCount()
    except error as exc:
        raise ToolError(f"NVML: {exc}") from exc
    gpus = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except error as exc:
            log.warning("NVML cannot open GPU %d: %s", index, exc)
            continue
        name = _nvml_field(error, nvml.nvmlDeviceGetName, handle)
        uuid = _nvml_field(error, nvml.nvmlDeviceGetUUID, handle)
        rates = _nvml_field(error, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _nvml_field(error, nvml.nvmlDeviceGetMemoryInfo, handle)
        temperature = _nvml_field(error, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        power_mw = _nvml_field(error, nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = _nvml_field(error, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        gpus.append(
            GpuMetrics(
                index=index,
                name=_text(name) if name else f"NVIDIA GPU {index}",
                vendor="nvidia",
                uuid=_text(uuid) if uuid else None,
                utilization_pct=float(rates.gpu) if rates is not None else 0.0,
                memory_used_bytes=int(memory.used) if memory is not None else 0,
                memory_total_bytes=int(memory.total) if memory is not None else 0,
                temperature_c=float(temperature) if temperature is not None else None,
                power_w=power_mw / 1000 if power_mw is not None else None,
                power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
            )
        )
    return gpus


def _nvml_field(error: type[Exception], call: Callable[..., T], *args: object) -> T | None:
    try:
        return call(*args)
    except error:
        return None


def _text(value: str | bytes) -> str:
    # nvidia-ml-py returns str for names but bytes for UUIDs (and bytes for both in older releases).
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# -- parsing ------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:[A-Za-z%]+)?\s*")


def _number(value: object) -> float | None:
    """A number from a tool's field; ``None`` for ``[N/A]``, ``[Not Supported]``, ``N/A (Secondary die)``…"""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _NUMBER.fullmatch(value)):
        number = float(match.group(1))
    else:
        return None
    return number if math.isfinite(number) else None


def _known(value: str) -> str | None:
    value = value.strip()
    if not value or value.strip("[]").lower() in {"n/a", "not supported", "unknown error", "unknown"}:
        return None
    return value


def parse_nvidia_smi_csv(text: str) -> list[GpuMetrics]:
    """Parse ``nvidia-smi --query-gpu=<NVIDIA_SMI_ARGS columns> --format=csv,noheader,nounits``.

    Unavailable fields read ``[N/A]`` (``N/A`` or ``[Not Supported]`` on older drivers); lines that are
    not GPU rows (warnings such as "GPU has fallen off the bus") are skipped. Memory comes in MiB.
    """
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < _NVIDIA_SMI_COLUMNS or not fields[0].isdigit():
            continue
        # No GPU name has a comma today, but if one did, the fixed columns after it still line up.
        name = ", ".join(fields[1 : len(fields) - 7])
        uuid, utilization, used, total, temperature, power, limit = fields[len(fields) - 7 :]
        used_mib = _number(used)
        total_mib = _number(total)
        gpus.append(
            GpuMetrics(
                index=int(fields[0]),
                name=_known(name) or f"NVIDIA GPU {fields[0]}",
                vendor="nvidia",
                uuid=_known(uuid),
                utilization_pct=_number(utilization) or 0.0,
                memory_used_bytes=round(used_mib * _MIB) if used_mib is not None else 0,
                memory_total_bytes=round(total_mib * _MIB) if total_mib is not None else 0,
                temperature_c=_number(temperature),
                power_w=_number(power),
                power_limit_w=_number(limit),
            )
        )
    return gpus


_CARD = re.compile(r"card(\d+)")
# rocm-smi renamed keys across releases ("Card series" became "Card Series" in ROCm 6.1, older releases
# printed "(c)" for temperatures), so cards are looked up with lower-cased keys.
_ROCM_NAME_KEYS = ("card series", "device name", "card model")
_ROCM_TEMPERATURE_KEYS = ("temperature (sensor edge) (c)", "temperature (sensor junction) (c)")
# MI300 reports only the current socket power; older GPUs and Radeons report only the average.
_ROCM_POWER_KEYS = ("current socket graphics package power (w)", "average graphics package power (w)")
_ROCM_POWER_LIMIT_KEYS = ("max graphics package power (w)",)


def parse_rocm_smi_json(text: str) -> list[GpuMetrics]:
    """Parse ``rocm-smi <ROCM_SMI_ARGS> --json``: an object with one ``cardN`` object per GPU.

    Warnings rocm-smi prints before the JSON are skipped; a missing or ``N/A`` field is unknown.
    """
    start = text.find("{")
    if start < 0:
        return []
    try:
        document, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    cards: list[tuple[int, dict[str, object]]] = []
    for key, value in document.items():
        match = _CARD.fullmatch(key)
        if match and isinstance(value, dict):
            cards.append((int(match.group(1)), {str(k).strip().lower(): v for k, v in value.items()}))
    gpus = []
    for index, card in sorted(cards):
        used = _number(card.get("vram total used memory (b)"))
        total = _number(card.get("vram total memory (b)"))
        gpus.append(
            GpuMetrics(
                index=index,
                name=_first_text(card, _ROCM_NAME_KEYS) or f"AMD GPU {index}",
                vendor="amd",
                uuid=_first_text(card, ("unique id",)),
                utilization_pct=_number(card.get("gpu use (%)")) or 0.0,
                memory_used_bytes=int(used) if used is not None else 0,
                memory_total_bytes=int(total) if total is not None else 0,
                temperature_c=_first_number(card, _ROCM_TEMPERATURE_KEYS),
                power_w=_first_number(card, _ROCM_POWER_KEYS),
                power_limit_w=_first_number(card, _ROCM_POWER_LIMIT_KEYS),
            )
        )
    return gpus


def _first_text(card: Mapping[str, object], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = card.get(key)
        if isinstance(value, str) and (text := _known(value)):
            return text
    return None


def _first_number(card: Mapping[str, object], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if (number := _number(card.get(key))) is not None:
            return number
    return None
