"""`heap.settle`: what a started server built is frozen out of the collector's walks; young collections are rarer."""

from __future__ import annotations

import gc

import pytest

from potluck._shared import heap


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_what_exists_and_raises_only_the_young_threshold() -> None:
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    startup = [[i] for i in range(1000)]  # containers built "at startup", alive from now on

    heap.settle()

    assert gc.get_freeze_count() >= len(startup)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, older, oldest)
    # Frozen objects are out of every generation the collector walks.
    walked = {id(obj) for generation in range(3) for obj in gc.get_objects(generation=generation)}
    assert not walked & {id(obj) for obj in startup}


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_made_after_settling_is_still_collected() -> None:
    heap.settle()

    class Node:
        other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
