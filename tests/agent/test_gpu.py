"""Host and GPU metrics: the vendor tools' parsers on recorded outputs, and how the probe picks a source."""

from __future__ import annotations

import asyncio
import importlib
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

import msgspec
import psutil
import pytest

from potluck.agent.gpu import (
    NVIDIA_SMI_ARGS,
    ROCM_SMI_ARGS,
    MetricsProbe,
    NvmlMemory,
    NvmlUtilization,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
)
from potluck.protocol.metrics import GpuMetrics, HostMetrics

T = TypeVar("T")

FIXTURES = Path(__file__).parent / "fixtures"
MIB = 1 << 20
# The real pynvml's exception classes, so the fake NVML raises exactly what the library raises.
pynvml = importlib.import_module("pynvml")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# -- nvidia-smi parsing -------------------------------------------------------------------------------


def test_parse_nvidia_smi_one_gpu() -> None:
    assert parse_nvidia_smi_csv(fixture("nvidia-smi-h100.csv")) == [
        GpuMetrics(
            index=0,
            name="NVIDIA H100 80GB HBM3",
            vendor="nvidia",
            uuid="GPU-3a1f9e02-4c11-4b8a-9e2d-7f6b1c0a55e1",
            utilization_pct=0.0,
            memory_used_bytes=412 * MIB,
            memory_total_bytes=81559 * MIB,
            temperature_c=34.0,
            power_w=68.21,
            power_limit_w=700.0,
        )
    ]


def test_parse_nvidia_smi_two_gpus_in_index_order() -> None:
    idle, busy = parse_nvidia_smi_csv(fixture("nvidia-smi-2x-rtx4090.csv"))
    assert (idle.index, busy.index) == (0, 1)
    assert idle.name == busy.name == "NVIDIA GeForce RTX 4090"
    assert idle.uuid != busy.uuid
    assert (idle.utilization_pct, idle.memory_used_bytes) == (0.0, 2 * MIB)
    assert (busy.utilization_pct, busy.memory_used_bytes) == (97.0, 21736 * MIB)
    assert busy.memory_total_bytes == 24564 * MIB
    assert (busy.temperature_c, busy.power_w, busy.power_limit_w) == (66.0, 431.52, 450.0)


def test_parse_nvidia_smi_not_supported_power_is_none() -> None:
    [gpu] = parse_nvidia_smi_csv(fixture("nvidia-smi-gtx1050ti.csv"))
    assert gpu.name == "GeForce GTX 1050 Ti"
    assert gpu.power_w is None
    assert gpu.power_limit_w == 120.0
    assert gpu.temperature_c == 54.0
    assert gpu.memory_total_bytes == 4040 * MIB


def test_parse_nvidia_smi_unified_memory_gpu_reports_no_memory() -> None:
    [gpu] = parse_nvidia_smi_csv(fixture("nvidia-smi-gb10.csv"))
    assert gpu.name == "NVIDIA GB10"
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (0, 0)
    assert (gpu.temperature_c, gpu.power_w, gpu.power_limit_w) == (35.0, 11.17, None)


@pytest.mark.parametrize("na", ["[N/A]", "N/A", "[Not Supported]", "[Unknown Error]"])
def test_parse_nvidia_smi_unavailable_spellings(na: str) -> None:
    [gpu] = parse_nvidia_smi_csv(f"3, Tesla K80, {na}, {na}, {na}, {na}, {na}, {na}, {na}\n")
    assert gpu == GpuMetrics(
        index=3, name="Tesla K80", vendor="nvidia", utilization_pct=0.0, memory_used_bytes=0, memory_total_bytes=0
    )


def test_parse_nvidia_smi_skips_lines_that_are_not_gpu_rows() -> None:
    text = (
        "Unable to determine the device handle for GPU0000:01:00.0: GPU has fallen off the bus.\r\n"
        "\r\n"
        "1, NVIDIA A100-SXM4-80GB, GPU-x, 5, 10, 81920, 30, 60.5, 400.00\r\n"
        "garbage, a, b, c, d, e, f, g, h\r\n"
    )
    [gpu] = parse_nvidia_smi_csv(text)
    assert (gpu.index, gpu.name, gpu.power_w) == (1, "NVIDIA A100-SXM4-80GB", 60.5)


def test_parse_nvidia_smi_keeps_a_name_with_a_comma() -> None:
    [gpu] = parse_nvidia_smi_csv("0, Odd, Name, GPU-x, 1, 2, 3, 4, 5.00, 6.00\n")
    assert (gpu.name, gpu.uuid, gpu.utilization_pct, gpu.power_limit_w) == ("Odd, Name", "GPU-x", 1.0, 6.0)


def test_parse_nvidia_smi_empty() -> None:
    assert parse_nvidia_smi_csv("") == []
    assert parse_nvidia_smi_csv("No devices were found\n") == []


# -- rocm-smi parsing ---------------------------------------------------------------------------------


def test_parse_rocm_smi_mi300x_older_keys() -> None:
    gpus = parse_rocm_smi_json(fixture("rocm-smi-mi300x.json"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert gpus[0] == GpuMetrics(
        index=0,
        name="AMD Instinct MI300X OAM",
        vendor="amd",
        uuid="0x8d1457e2c20f59d2",
        utilization_pct=0.0,
        memory_used_bytes=299687936,
        memory_total_bytes=205822885888,
        # MI300X has no edge sensor: the junction one stands in.
        temperature_c=35.0,
        # ... and reports the current socket power rather than an average.
        power_w=133.0,
        power_limit_w=750.0,
    )
    assert [g.power_w for g in gpus] == [133.0, 130.0, 131.0, 136.0]
    assert [g.temperature_c for g in gpus] == [35.0, 37.0, 34.0, 39.0]


def test_parse_rocm_smi_radeon_newer_keys() -> None:
    [gpu] = parse_rocm_smi_json(fixture("rocm-smi-rx7900xt.json"))
    assert gpu == GpuMetrics(
        index=0,
        name="Radeon RX 7900 XT",
        vendor="amd",
        utilization_pct=0.0,
        memory_used_bytes=27856896,
        memory_total_bytes=21458059264,
    )


def test_parse_rocm_smi_radeon_without_product_name() -> None:
    [gpu] = parse_rocm_smi_json(fixture("rocm-smi-rx7900xtx.json"))
    assert gpu.name == "AMD GPU 0"
    assert gpu.temperature_c == 49.0  # the edge sensor, not junction or memory
    assert gpu.power_w == 19.0  # "Average Graphics Package Power (W)"
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (794341376, 25753026560)


def test_parse_rocm_smi_secondary_die_has_no_power() -> None:
    primary, secondary = parse_rocm_smi_json(fixture("rocm-smi-mi250x.json"))
    assert primary.name == secondary.name == "AMD INSTINCT MI200 (MCM) OAM LC MBA HPE C2"
    assert (primary.power_w, secondary.power_w) == (237.0, None)
    assert primary.power_limit_w == secondary.power_limit_w == 560.0
    assert primary.utilization_pct == 100.0
    assert primary.temperature_c is None


def test_parse_rocm_smi_skips_warnings_and_the_system_entry() -> None:
    text = (
        "\n\nWARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status\n\n"
        '{"card1": {"Card Series": "B", "GPU use (%)": "7"}, "system": {"Driver version": "6.8.5"}, '
        '"card0": {"Card Series": "A", "Unique ID": "N/A"}}\n'
    )
    gpus = parse_rocm_smi_json(text)
    assert [(g.index, g.name, g.uuid, g.utilization_pct) for g in gpus] == [(0, "A", None, 0.0), (1, "B", None, 7.0)]


def test_parse_rocm_smi_old_lower_case_units_and_numeric_values() -> None:
    text = '{"card0": {"Temperature (Sensor edge) (c)": 41.0, "VRAM Total Memory (B)": 17163091968, "GPU use (%)": 3}}'
    [gpu] = parse_rocm_smi_json(text)
    assert (gpu.temperature_c, gpu.memory_total_bytes, gpu.utilization_pct) == (41.0, 17163091968, 3.0)


@pytest.mark.parametrize("text", ["", "ERROR: not json at all", "[1, 2]", "{}", '{"card0": "x"}', '{"card0": {'])
def test_parse_rocm_smi_nothing_usable(text: str) -> None:
    assert parse_rocm_smi_json(text) == []


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.name != "README.md"))
def test_every_fixture_parses_to_sane_gpus(name: str) -> None:
    parse = parse_nvidia_smi_csv if name.startswith("nvidia-smi") else parse_rocm_smi_json
    gpus = parse(fixture(name))
    assert gpus
    for gpu in gpus:
        assert gpu.name
        assert gpu.vendor == ("nvidia" if name.startswith("nvidia-smi") else "amd")
        assert 0 <= gpu.utilization_pct <= 100
        assert 0 <= gpu.memory_used_bytes <= gpu.memory_total_bytes
        assert gpu.power_w is None or 0 < gpu.power_w < 2000
        assert gpu.temperature_c is None or 0 < gpu.temperature_c < 120
        # It goes over the wire: round-trips through the protocol encoding.
        assert msgspec.json.decode(msgspec.json.encode(gpu), type=GpuMetrics) == gpu


# -- fakes --------------------------------------------------------------------------------------------


def nvml_error(name: str) -> Exception:
    """An instance of one of pynvml's error classes, e.g. ``NVMLError_NotSupported``."""
    error_class: type[Exception] = getattr(pynvml, name)
    return error_class()


def not_supported() -> Exception:
    return nvml_error("NVMLError_NotSupported")


def give(value: T | Exception) -> T:
    if isinstance(value, Exception):
        raise value
    return value


@dataclass
class FakeDevice:
    """What NVML says about one GPU; a field holding an exception raises it instead."""

    name: str | bytes | Exception = "NVIDIA H100 80GB HBM3"
    uuid: str | bytes | Exception = b"GPU-3a1f9e02-4c11-4b8a-9e2d-7f6b1c0a55e1"
    utilization: int | Exception = 42
    memory: tuple[int, int] | Exception = (1 << 30, 80 << 30)
    temperature: int | Exception = 51
    power_mw: int | Exception = 312_540
    limit_mw: int | Exception = 700_000


@dataclass
class FakeNvml:
    """Stands in for the ``pynvml`` module, returning and raising what pynvml does."""

    devices: list[FakeDevice] = field(default_factory=list)
    init_error: Exception | None = None
    count_error: Exception | None = None
    lost: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    NVMLError: ClassVar[type[Exception]] = pynvml.NVMLError
    NVML_TEMPERATURE_GPU: ClassVar[int] = pynvml.NVML_TEMPERATURE_GPU

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error is not None:
            raise self.count_error
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> object:
        if index in self.lost:
            raise nvml_error("NVMLError_GpuIsLost")
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: object, /) -> str | bytes:
        assert isinstance(handle, FakeDevice)
        if isinstance(handle.name, Exception):
            raise handle.name
        return handle.name

    def nvmlDeviceGetUUID(self, handle: object, /) -> str | bytes:
        assert isinstance(handle, FakeDevice)
        if isinstance(handle.uuid, Exception):
            raise handle.uuid
        return handle.uuid

    def nvmlDeviceGetUtilizationRates(self, handle: object, /) -> NvmlUtilization:
        assert isinstance(handle, FakeDevice)
        rates: NvmlUtilization = pynvml.c_nvmlUtilization_t(gpu=give(handle.utilization), memory=0)
        return rates

    def nvmlDeviceGetMemoryInfo(self, handle: object, /) -> NvmlMemory:
        assert isinstance(handle, FakeDevice)
        used, total = give(handle.memory)
        memory: NvmlMemory = pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)
        return memory

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int, /) -> int:
        assert isinstance(handle, FakeDevice)
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return give(handle.temperature)

    def nvmlDeviceGetPowerUsage(self, handle: object, /) -> int:
        assert isinstance(handle, FakeDevice)
        return give(handle.power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object, /) -> int:
        assert isinstance(handle, FakeDevice)
        return give(handle.limit_mw)


def fake_tool(tmp_path: Path, name: str, body: str) -> str:
    """A shell script standing in for a vendor tool; it fails unless called with the probe's arguments."""
    args = NVIDIA_SMI_ARGS if name == "nvidia-smi" else ROCM_SMI_ARGS
    path = tmp_path / name
    path.write_text(
        f"#!/bin/sh\necho run >> {shlex.quote(str(tmp_path / (name + '.calls')))}\n"
        f'[ "$*" = {shlex.quote(" ".join(args))} ] || {{ echo "bad arguments: $*" >&2; exit 3; }}\n{body}\n'
    )
    path.chmod(0o755)
    return str(path)


def printing(tmp_path: Path, name: str, fixture_name: str) -> str:
    return fake_tool(tmp_path, name, f"cat {shlex.quote(str(FIXTURES / fixture_name))}")


def calls(tmp_path: Path, name: str) -> int:
    path = tmp_path / (name + ".calls")
    return len(path.read_text().splitlines()) if path.exists() else 0


def gone(pid: int) -> bool:
    """Killed: no such process, or a zombie nobody has reaped yet (a container's PID 1 may never)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


NO_DRIVER = (
    "echo 'NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.'; exit 9"
)


# -- source selection ---------------------------------------------------------------------------------


async def test_nvml_is_preferred_and_reads_every_field(tmp_path: Path) -> None:
    nvml = FakeNvml(devices=[FakeDevice(), FakeDevice(name="NVIDIA L4", uuid="GPU-l4", memory=(0, 23034 * MIB))])
    probe = MetricsProbe(
        nvml=nvml,
        nvidia_smi=printing(tmp_path, "nvidia-smi", "nvidia-smi-h100.csv"),
        rocm_smi=printing(tmp_path, "rocm-smi", "rocm-smi-mi300x.json"),
    )
    sample = await probe.sample()
    assert sample.source == "nvml"
    assert sample.gpus[0] == GpuMetrics(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        vendor="nvidia",
        uuid="GPU-3a1f9e02-4c11-4b8a-9e2d-7f6b1c0a55e1",
        utilization_pct=42.0,
        memory_used_bytes=1 << 30,
        memory_total_bytes=80 << 30,
        temperature_c=51.0,
        power_w=312.54,
        power_limit_w=700.0,
    )
    assert (sample.gpus[1].index, sample.gpus[1].name, sample.gpus[1].uuid) == (1, "NVIDIA L4", "GPU-l4")
    assert calls(tmp_path, "nvidia-smi") == calls(tmp_path, "rocm-smi") == 0


async def test_nvml_unsupported_fields_are_unknown_not_errors() -> None:
    geforce = FakeDevice(name=b"GeForce GTX 1050 Ti", power_mw=not_supported(), limit_mw=not_supported())
    gb10 = FakeDevice(name="NVIDIA GB10", memory=not_supported(), temperature=not_supported())
    mig = FakeDevice(utilization=not_supported(), uuid=not_supported(), name=not_supported())
    probe = MetricsProbe(nvml=FakeNvml(devices=[geforce, gb10, mig]), nvidia_smi=None, rocm_smi=None)
    sample = await probe.sample()
    assert sample.source == "nvml"
    first, second, third = sample.gpus
    assert (first.name, first.power_w, first.power_limit_w) == ("GeForce GTX 1050 Ti", None, None)
    assert first.temperature_c == 51.0
    assert (second.memory_used_bytes, second.memory_total_bytes, second.temperature_c) == (0, 0, None)
    assert (third.name, third.uuid, third.utilization_pct) == ("NVIDIA GPU 2", None, 0.0)


async def test_a_gpu_nvml_cannot_open_is_left_out() -> None:
    nvml = FakeNvml(devices=[FakeDevice(), FakeDevice(name="B")], lost={0})
    sample = await MetricsProbe(nvml=nvml, nvidia_smi=None, rocm_smi=None).sample()
    assert [(g.index, g.name) for g in sample.gpus] == [(1, "B")]


@pytest.mark.parametrize("error", ["NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_NoPermission"])
async def test_nvml_unusable_falls_back_to_nvidia_smi(tmp_path: Path, error: str) -> None:
    nvml = FakeNvml(init_error=nvml_error(error))
    probe = MetricsProbe(
        nvml=nvml,
        nvidia_smi=printing(tmp_path, "nvidia-smi", "nvidia-smi-2x-rtx4090.csv"),
        rocm_smi=printing(tmp_path, "rocm-smi", "rocm-smi-mi300x.json"),
    )
    sample = await probe.sample()
    assert sample.source == "nvidia-smi"
    assert sample.gpus == parse_nvidia_smi_csv(fixture("nvidia-smi-2x-rtx4090.csv"))
    assert calls(tmp_path, "rocm-smi") == 0
    assert nvml.calls == ["init"]


async def test_nvml_without_devices_is_shut_down_and_skipped(tmp_path: Path) -> None:
    nvml = FakeNvml(devices=[])
    probe = MetricsProbe(nvml=nvml, nvidia_smi=None, rocm_smi=printing(tmp_path, "rocm-smi", "rocm-smi-rx7900xt.json"))
    sample = await probe.sample()
    assert sample.source == "rocm-smi"
    assert nvml.calls == ["init", "shutdown"]


async def test_nvidia_smi_without_driver_falls_back_to_rocm_smi(tmp_path: Path) -> None:
    probe = MetricsProbe(
        nvml=None,
        nvidia_smi=fake_tool(tmp_path, "nvidia-smi", NO_DRIVER),
        rocm_smi=printing(tmp_path, "rocm-smi", "rocm-smi-mi300x.json"),
    )
    sample = await probe.sample()
    assert sample.source == "rocm-smi"
    assert [g.name for g in sample.gpus] == ["AMD Instinct MI300X OAM"] * 4
    assert calls(tmp_path, "nvidia-smi") == 1


async def test_nothing_usable_means_no_gpus_and_source_none(tmp_path: Path) -> None:
    probe = MetricsProbe(
        nvml=FakeNvml(init_error=nvml_error("NVMLError_LibraryNotFound")),
        nvidia_smi=fake_tool(tmp_path, "nvidia-smi", NO_DRIVER),
        rocm_smi=fake_tool(tmp_path, "rocm-smi", "echo 'WARNING: No AMD GPUs specified'"),
    )
    sample = await probe.sample()
    assert (sample.gpus, sample.source) == ([], "none")
    assert probe.source == "none"


async def test_no_sources_at_all(tmp_path: Path) -> None:
    probe = MetricsProbe(nvml=None, nvidia_smi=None, rocm_smi=str(tmp_path / "missing" / "rocm-smi"))
    sample = await probe.sample()
    assert (sample.gpus, sample.source) == ([], "none")


async def test_the_source_is_picked_once(tmp_path: Path) -> None:
    nvml = FakeNvml(init_error=nvml_error("NVMLError_DriverNotLoaded"))
    probe = MetricsProbe(nvml=nvml, nvidia_smi=printing(tmp_path, "nvidia-smi", "nvidia-smi-h100.csv"), rocm_smi=None)
    assert probe.source is None
    for _ in range(3):
        assert (await probe.sample()).source == "nvidia-smi"
    assert nvml.calls == ["init"]
    # One run to pick the source, then one per sample.
    assert calls(tmp_path, "nvidia-smi") == 4


async def test_a_source_that_fails_later_gives_a_sample_without_gpus(tmp_path: Path) -> None:
    output = tmp_path / "output.json"
    output.write_text(fixture("rocm-smi-rx7900xtx.json"))
    probe = MetricsProbe(nvml=None, nvidia_smi=None, rocm_smi=fake_tool(tmp_path, "rocm-smi", f"cat {output}"))
    assert len((await probe.sample()).gpus) == 1
    output.unlink()
    sample = await probe.sample()
    assert (sample.gpus, sample.source) == ([], "none")
    assert probe.source == "rocm-smi"


async def test_nvml_that_fails_later_gives_a_sample_without_gpus() -> None:
    nvml = FakeNvml(devices=[FakeDevice()])
    probe = MetricsProbe(nvml=nvml, nvidia_smi=None, rocm_smi=None)
    assert len((await probe.sample()).gpus) == 1
    nvml.count_error = nvml_error("NVMLError_Unknown")
    assert (await probe.sample()).gpus == []


async def test_a_hanging_tool_times_out_instead_of_hanging_the_agent(tmp_path: Path) -> None:
    # Not `exec`: the shell's child must be killed as well, or it would outlive the timeout.
    pids = tmp_path / "pids"
    hang = f"sleep 30 &\necho $! > {pids}\nwait"
    probe = MetricsProbe(
        nvml=None,
        nvidia_smi=fake_tool(tmp_path, "nvidia-smi", hang),
        rocm_smi=printing(tmp_path, "rocm-smi", "rocm-smi-rx7900xt.json"),
        timeout=0.3,
    )
    started = time.monotonic()
    async with asyncio.timeout(5):
        sample = await probe.sample()
    assert time.monotonic() - started < 3
    assert sample.source == "rocm-smi"
    child = int(pids.read_text())
    async with asyncio.timeout(2):
        while not gone(child):
            await asyncio.sleep(0.01)


async def test_hanging_tools_everywhere_give_no_gpus(tmp_path: Path) -> None:
    probe = MetricsProbe(
        nvml=None,
        nvidia_smi=fake_tool(tmp_path, "nvidia-smi", "exec sleep 30"),
        rocm_smi=fake_tool(tmp_path, "rocm-smi", "exec sleep 30"),
        timeout=0.2,
    )
    async with asyncio.timeout(5):
        sample = await probe.sample()
    assert (sample.gpus, sample.source) == ([], "none")


async def test_cancelling_a_sample_kills_the_tool(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    probe = MetricsProbe(
        nvml=None, nvidia_smi=fake_tool(tmp_path, "nvidia-smi", f"echo $$ > {pids}\nexec sleep 30"), rocm_smi=None
    )
    task = asyncio.create_task(probe.sample())
    async with asyncio.timeout(2):
        while not pids.exists() or not pids.read_text().strip():
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(int(pids.read_text()))


async def test_aclose_shuts_nvml_down_once() -> None:
    nvml = FakeNvml(devices=[FakeDevice()])
    probe = MetricsProbe(nvml=nvml, nvidia_smi=None, rocm_smi=None)
    await probe.sample()
    await probe.aclose()
    await probe.aclose()
    assert nvml.calls == ["init", "shutdown"]


# -- host ---------------------------------------------------------------------------------------------


async def test_host_figures_are_sane() -> None:
    probe = MetricsProbe(nvml=None, nvidia_smi=None, rocm_smi=None)
    sample = await probe.sample()
    assert 0.0 <= sample.cpu_pct <= 100.0
    assert sample.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < sample.ram_used_bytes < sample.ram_total_bytes


async def test_from_system_never_raises() -> None:
    probe = MetricsProbe.from_system(timeout=10)
    try:
        sample = await probe.sample()
    finally:
        await probe.aclose()
    assert sample.source in {"nvml", "nvidia-smi", "rocm-smi", "none"}
    assert (sample.source == "none") == (sample.gpus == [])


def test_host_metrics_wire_form_omits_unknowns() -> None:
    gpu = GpuMetrics(index=0, name="X", vendor="amd", utilization_pct=1.5, memory_used_bytes=1, memory_total_bytes=2)
    host = HostMetrics(cpu_pct=3.0, ram_used_bytes=4, ram_total_bytes=5, gpus=[gpu], source="rocm-smi")
    encoded = msgspec.json.encode(host)
    assert b"uuid" not in encoded
    assert b"power_w" not in encoded
    assert msgspec.json.decode(encoded, type=HostMetrics) == host
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(host), type=HostMetrics) == host
