"""Request ids: random, distinct, and never shared with a forked child."""

from __future__ import annotations

import re
import subprocess
import sys

from potluck._shared.ids import new_request_id

FORKS = """
import os
from potluck._shared.ids import new_request_id

new_request_id()  # ids are waiting in the parent now
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, " ".join(new_request_id() for _ in range(5)).encode())
    os._exit(0)
os.close(write)
os.wait()
child = os.read(read, 4096).decode().split()
parent = [new_request_id() for _ in range(5)]
print(" ".join(child), "|", " ".join(parent))
"""


def test_request_ids_are_distinct_and_well_formed_across_refills() -> None:
    ids = [new_request_id() for _ in range(2000)]  # several refills of the ids made ahead
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", rid) for rid in ids)


def test_a_forked_child_draws_its_own_ids() -> None:
    # In a process of its own: forking this one (threads and all) is not safe.
    out = subprocess.run([sys.executable, "-c", FORKS], capture_output=True, text=True, check=True, timeout=30).stdout
    child, parent = (set(side.split()) for side in out.split("|"))
    assert len(child) == 5
    assert len(parent) == 5
    assert child.isdisjoint(parent)
