"""What an agent reports about its host: CPU, RAM and each GPU it can see.

The agent samples these with ``potluck.agent.gpu.MetricsProbe``. Every GPU figure is whatever the
vendor's tool said; a figure the tool could not give is ``None`` (optional fields) or ``0``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

GpuVendor = Literal["nvidia", "amd"]
"""Who made a GPU."""

MetricsSource = Literal["nvml", "nvidia-smi", "rocm-smi", "none"]
"""Which probe produced the GPU figures; ``none`` when the agent found no GPU it can read."""


class GpuMetrics(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One GPU at the moment of sampling."""

    index: int
    """The GPU's index as its vendor tool numbers it (``nvidia-smi -i``, ``rocm-smi -d``)."""
    name: str
    """Marketing name, e.g. ``NVIDIA H100 80GB HBM3`` or ``AMD Instinct MI300X OAM``."""
    vendor: GpuVendor
    """``nvidia`` or ``amd``."""
    uuid: str | None = None
    """Stable identifier from the vendor tool (``GPU-…`` for NVIDIA, the unique ID for AMD), when known."""
    utilization_pct: float
    """Share of the last sample period the GPU was busy, 0 to 100 (0 when the tool cannot tell)."""
    memory_used_bytes: int
    """Device memory in use, in bytes (0 when the tool cannot tell, e.g. unified-memory GPUs)."""
    memory_total_bytes: int
    """Device memory in all, in bytes (0 when the tool cannot tell, e.g. unified-memory GPUs)."""
    temperature_c: float | None = None
    """GPU temperature in °C (AMD: the edge sensor, or the junction sensor where there is no edge one)."""
    power_w: float | None = None
    """Power draw in watts, when the GPU reports it."""
    power_limit_w: float | None = None
    """Power cap in force, in watts, when the GPU reports it."""


class HostMetrics(msgspec.Struct, frozen=True, omit_defaults=True):
    """The agent's host at the moment of sampling."""

    cpu_pct: float
    """CPU utilisation over all cores since the previous sample, 0 to 100."""
    ram_used_bytes: int
    """Host memory in use (total minus available), in bytes."""
    ram_total_bytes: int
    """Host memory in all, in bytes."""
    gpus: list[GpuMetrics]
    """Every GPU the agent can see, in index order; empty when it sees none."""
    source: str
    """Which probe produced ``gpus``: ``nvml``, ``nvidia-smi``, ``rocm-smi`` or ``none``."""
