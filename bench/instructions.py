"""Instructions per request in the hub or the agent, counted by callgrind: a figure to compare code by.

CPU per request from bench/relay.py moves 10-35 % between runs on this shared two-core machine, more than
most single changes save. Valgrind's callgrind counts the instructions a process executes, whatever else
the machine is doing: runs of the same code agree within about 0.5 %. It counts nothing in the kernel
(system calls, wakeups: about 13 % of the hub's CPU under load), so it measures the Python and C work a
request costs, which is what a change to the code moves. It is a tool for comparing two versions of the
code, not a measure of speed: seconds come from bench/relay.py.

It starts the fake backend, a hub and an agent as bench/relay.py does, the measured process under
``valgrind --tool=callgrind --instr-atstart=no``; warms up; switches counting on (``callgrind_control -i
on``); sends ``--requests`` chat completions, ``--concurrency`` at a time; waits until the process is idle
(the hub's usage writer has caught up); switches counting off, and divides.

Run: ``python bench/instructions.py [--process hub|agent] [--requests 2000] [--concurrency 16] [--stream]
[--keep FILE]``. ``--keep`` saves callgrind's profile for ``callgrind_annotate``. Needs Debian's valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.relaybench.scenarios import MODEL
from bench.relaybench.services import (
    Service,
    admin_post,
    agent_argv,
    spawn,
    start_hub,
    wait_listening,
    wait_model,
    wait_quiet,
)

WARMUP_REQUESTS = 300
_SUMMARY = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


async def _send(http: aiohttp.ClientSession, url: str, key: str, count: int, concurrency: int, stream: bool) -> None:
    """``count`` chat completions, ``concurrency`` at a time; every one must succeed."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"a request answered {resp.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _control(service: Service, switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(service.proc.pid)], check=True, capture_output=True)


async def measure(args: argparse.Namespace, tmp: Path) -> int:
    """Instructions the measured process executed while serving the requests."""
    callgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp / 'callgrind.out'}"]
    backend = spawn("backend", [sys.executable, "-m", "testing.fake_backend", "--port", "0", "--chunks", "16"], tmp)
    services = [backend]
    try:
        await wait_listening(backend)
        # About 40 times slower under valgrind: minutes to start.
        hub = await start_hub(tmp, tmp / "hub", wrapper=callgrind if args.process == "hub" else (), timeout=600)
        services.append(hub)
        async with aiohttp.ClientSession() as http:
            key = (await admin_post(http, hub.url, "/admin/keys", "bench"))["key"]
            token = (await admin_post(http, hub.url, "/admin/agent-tokens", "bench-agent"))["token"]
            argv = agent_argv(hub.url, token, backend.url, tmp / "agent")
            agent = spawn("agent", [*(callgrind if args.process == "agent" else []), *argv], tmp)
            services.append(agent)
            await wait_model(http, hub.url, key, timeout=600)
            measured = hub if args.process == "hub" else agent
            await _send(http, hub.url, key, WARMUP_REQUESTS, args.concurrency, args.stream)
            await wait_quiet([measured])
            _control(measured, "on")
            started = time.monotonic()
            await _send(http, hub.url, key, args.requests, args.concurrency, args.stream)
            await wait_quiet([measured])
            _control(measured, "off")
            print(f"{args.requests} requests in {time.monotonic() - started:.1f} s under callgrind")
        measured.proc.terminate()  # callgrind writes its profile as the process exits
        measured.proc.wait(120)
    finally:
        for service in reversed(services):
            service.stop()
    profiles = sorted(tmp.glob("callgrind.out*"))
    if args.keep is not None and profiles:
        shutil.copy(profiles[0], args.keep)
    return sum(int(n) for path in profiles for n in _SUMMARY.findall(path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--process", choices=("hub", "agent"), default="hub")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true", help="streamed answers (16 chunks each)")
    parser.add_argument("--keep", type=Path, help="save callgrind's profile here")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="potluck-instructions-") as tmp:
        total = asyncio.run(measure(args, Path(tmp)))
    if not total:
        sys.exit("callgrind wrote no counts")
    kind = "streamed" if args.stream else "non-streamed"
    print(f"{args.process}: {total / args.requests:,.0f} instructions per {kind} request at c={args.concurrency}")


if __name__ == "__main__":
    main()
