"""`potluck tray`: the agent with a system-tray icon and a local status page (extra ``potluck[tray]``).

The agent is the same daemon `potluck agent` runs (`runner.AgentRunner` runs it on a thread's event
loop); the icon (`icon.TrayApp`, pystray) and the page (`page.StatusPage`, 127.0.0.1 only) only read
its `status()` and call its `set_paused()`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from potluck.agent.settings import AgentSettings


class TrayUnavailableError(Exception):
    """No tray can be shown here (the extra is not installed, or there is no display)."""


def check_tray() -> None:
    """Import pystray now, so a missing extra or display is reported before the agent starts."""
    try:
        import pystray  # noqa: F401
    except ImportError as exc:
        raise TrayUnavailableError(
            f"potluck tray needs its extra (no module {exc.name!r}): pip install 'potluck[tray]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - python-xlib (X11 only) raises its own errors without a display
        raise TrayUnavailableError(
            f"no system tray: cannot open the display ({type(exc).__name__}: {exc}); run `potluck agent` instead"
        ) from None


def run_tray(settings: AgentSettings, *, page_port: int = 0, owner_token: str | None = None) -> int:
    """Run the agent with its icon until Quit, SIGINT or SIGTERM; the exit status.

    ``owner_token``: the owner's session token for this hub (from `potluck login`), to show today's earnings."""
    from potluck._shared.logging import configure_logging
    from potluck.agent.doctor import http_base
    from potluck.tray.icon import TrayApp
    from potluck.tray.runner import AgentRunner

    check_tray()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "tray.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    dashboard = http_base(settings.hub_url) + "/"
    quit_requested = threading.Event()
    _route_signals(quit_requested)
    runner = AgentRunner(settings, page_port=page_port, dashboard_url=dashboard, owner_token=owner_token)
    try:
        page_url = runner.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(f"status page {page_url}", flush=True)  # noqa: T201 - the one line a launcher or test reads
    app = TrayApp(runner, page_url=page_url, dashboard_url=dashboard, log_path=log_path, quitting=quit_requested)
    try:
        app.run()
    finally:
        runner.stop()
        if not runner.join(settings.drain_timeout + 5):
            print("the agent did not stop in time", file=sys.stderr)  # noqa: T201
    return 2 if runner.error is not None else 0


def _route_signals(quit_requested: threading.Event) -> None:
    """SIGINT and SIGTERM set ``quit_requested``.

    A Python handler runs only when the main thread runs bytecode, and the icon's loop keeps it asleep in
    a read on the display's socket, which a signal taken by another thread does not interrupt. So every
    other thread of the tray blocks them (`runner.keep_signals_off_this_thread`): the kernel hands them
    to the main thread, whose read they interrupt. Programs the tray starts from the main thread (the
    browser) inherit its mask, with nothing blocked.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: quit_requested.set())
