"""bench/server_cost.py: one short round through each of its servers, so the benchmark keeps working as the hub
changes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.server_cost import measure

pytestmark = pytest.mark.slow


async def test_every_server_answers_the_same_hub(tmp_path: Path) -> None:
    rows = await measure(argparse.Namespace(concurrency=[2], duration=0.5, rounds=1), tmp_path)
    assert [(row.server, row.concurrency) for row in rows] == [("front", 2), ("aiohttp", 2), ("minimal", 2)]
    assert all(row.served > 0 for row in rows), rows
    assert all(row.hub_user_us > 0 for row in rows), rows
