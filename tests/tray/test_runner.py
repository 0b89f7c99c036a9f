"""The tray's agent runner, without a display: it settles the heap once started, as `potluck agent` does."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from potluck._shared import heap
from potluck.agent.settings import AgentSettings
from potluck.tray.runner import AgentRunner


@pytest.mark.usefixtures("restored_gc")
def test_the_runner_settles_the_heap_once_started(tmp_path: Path) -> None:
    gc.unfreeze()
    settings = AgentSettings(hub_url="http://127.0.0.1:1", token="pat-x", data_dir=tmp_path)  # nothing listens
    runner = AgentRunner(settings, dashboard_url="http://127.0.0.1:1/ui")
    runner.start()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    finally:
        runner.stop()
        assert runner.join(30)
