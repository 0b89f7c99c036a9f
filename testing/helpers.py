"""Helpers shared by the tests of the test servers themselves (test_fake_*.py, test_support_servers.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
from openai.types.chat import ChatCompletionMessageParam

REPO_ROOT = Path(__file__).resolve().parents[1]
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say hello to me"}]


def sse_events(raw: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except the final `[DONE]`."""
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"", "the body ends with a blank line"
    events: list[Any] = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: "), frame
        data = frame[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else msgspec.json.decode(data))
    return events


async def run_as_process(module: str, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start `python -m module --port 0 *args`; return it and the URL of its `listening URL` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--port", "0", *args, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening http://127.0.0.1:"), line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, line.split()[1]


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, which must end the process with status 0 within 5 s; killed if it does not."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
