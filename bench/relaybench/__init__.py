"""Relay benchmark: the same load, side by side, straight to a fake backend, through Potluck, through LiteLLM.

    .venv/bin/python bench/relay.py [--quick] [--scenarios a,b] [--targets direct,potluck,litellm]
                                    [--duration S] [--litellm-python PATH] [--json-out PATH] [--profile]

One run starts a fast fake OpenAI backend (``testing.fake_backend``), a hub and an agent as
subprocesses (and LiteLLM's proxy when it can), then drives every selected scenario against every
target with one closed-loop load generator that runs in its own process(es). It measures
throughput, latency and time to first byte as the client sees them, CPU per request and per chunk
of each server process (from /proc), their RSS, and the hub's memory per idle agent WebSocket.
See bench/README.md for how to read the output. Linux only (/proc).

The modules, in the order a run uses them: `options` (the command line), `scenarios` (the table of
loads and the request each sends), `services` (the processes under test), `runner` (one measured run),
`loadgen` (the load generator's processes), `results`, `idle` (the idle-agents scenario),
`profiling` (py-spy), `report` (targets and tables) and `cli` (the whole run). `machine` reads /proc.
"""
