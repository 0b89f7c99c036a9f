"""The tray icon (pystray): the agent's state as a coloured dot and a tooltip, and a menu to drive it.

pystray draws through the desktop's own tray protocol: AppIndicator or GTK where those are installed,
the XEmbed system tray of plain X11 otherwise, and the native ones on macOS and Windows. Its loop owns
the main thread; a watcher thread (pystray's ``setup``) re-reads the agent's status every second and
ends the icon when the tray is asked to quit or the agent stops on its own.

On the XEmbed tray pystray has no menu: a click runs the default item, which opens the status page,
and the page has the Pause/Resume button.
"""

from __future__ import annotations

import logging
import os
import threading
import webbrowser
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from potluck.agent.status import AgentStatus, Link
from potluck.tray.page import state_line
from potluck.tray.runner import AgentRunner, keep_signals_off_this_thread

log = logging.getLogger(__name__)

POLL_S = 1.0
UNSTICK_S = 0.2
ICON_STOP_S = 3.0

_COLOURS = {
    "connected": (46, 160, 67),
    "serving": (31, 111, 235),
    "paused": (154, 160, 166),
    "offline": (207, 34, 46),
}


def icon_image(colour: str) -> Image.Image:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 6, 58, 58), fill=(*_COLOURS[colour], 255), outline=(255, 255, 255, 255), width=4)
    return image


def colour_of(status: AgentStatus | None) -> str:
    if status is None or status.link is not Link.CONNECTED:
        return "offline"
    if status.paused:
        return "paused"
    return "serving" if status.in_flight else "connected"


class TrayApp:
    """The icon and its menu over one `AgentRunner`; `run` blocks the calling (main) thread."""

    def __init__(
        self,
        runner: AgentRunner,
        *,
        page_url: str,
        dashboard_url: str,
        log_path: Path,
        quitting: threading.Event | None = None,
    ) -> None:
        self.runner = runner
        self.page_url = page_url
        self.dashboard_url = dashboard_url
        self.log_path = log_path
        self.quitting = quitting or threading.Event()
        """Set by Quit, or by SIGINT/SIGTERM: the watcher then stops the agent and ends the icon."""
        self._returned = threading.Event()
        self.status: AgentStatus | None = None
        self._icon: Any = None

    def run(self) -> None:
        import pystray  # needs a display at import time on X11: imported only when the icon is shown

        menu = pystray.Menu(
            pystray.MenuItem(lambda _: f"Potluck: {self.state}", None, enabled=False),
            pystray.MenuItem("Pause", self._toggle_pause, checked=lambda _: self.paused),
            pystray.MenuItem("Open status page", self._open_page, default=True),
            pystray.MenuItem("Open dashboard", self._open_dashboard),
            pystray.MenuItem("Open logs", self._open_logs),
            pystray.Menu.SEPARATOR,
            pystray.MenuItem("Quit", self._quit),
        )
        self._icon = pystray.Icon("potluck", icon_image("offline"), "Potluck: starting", menu)
        try:
            self._icon.run(setup=self._watch)
        finally:
            self._returned.set()

    @property
    def state(self) -> str:
        return "offline" if self.status is None else state_line(self.status)

    @property
    def paused(self) -> bool:
        return self.status is not None and self.status.paused

    def quit(self) -> None:
        """Safe from any thread: the watcher ends the icon."""
        self.quitting.set()

    def _watch(self, icon: Any) -> None:
        keep_signals_off_this_thread()
        display = getattr(icon, "_display", None)
        unstick = None
        if display is not None and hasattr(display, "pending_events"):
            # Before the icon is shown: showing it is a round trip on the icon's loop, and that wait can freeze
            # as later ones do (seen in CI: the loop stuck in `get_selection_owner`, the icon never shown).
            unstick = threading.Thread(target=self._unstick, args=(display,), name="potluck-tray-x11", daemon=True)
            unstick.start()
        icon.visible = True
        _select_clicks(icon)
        shown: tuple[str, str] | None = None
        while not self.quitting.is_set() and not self.runner.finished.is_set():
            self.status = self.runner.status()
            now = (colour_of(self.status), self.state)
            if now != shown:
                shown = now
                icon.icon = icon_image(now[0])
                icon.title = f"Potluck: {now[1]}"
                icon.update_menu()
                log.info("tray: %s", now[1])
            self.quitting.wait(POLL_S)
        self.quitting.set()
        # The agent first, from this thread: its drain must not wait on the icon's loop.
        self.runner.stop()
        self.runner.join(self.runner.settings.drain_timeout + 5)
        if unstick is not None:
            unstick.join()
        icon.stop()
        if not self._returned.wait(ICON_STOP_S):
            # pystray's X11 loop can miss its own window's end (python-xlib reads it on another thread):
            # the agent has drained and stopped, so nothing is lost by ending the process here.
            log.warning("the tray icon did not stop within %g s; exiting", ICON_STOP_S)
            logging.shutdown()
            os._exit(2 if self.runner.error is not None else 0)

    def _unstick(self, display: Any) -> None:
        """Two ways python-xlib's threaded mode freezes the icon, undone now and then while it runs:

        - A thread can be left waiting for a reply after another thread's flush (pystray's cross-thread
          updates flush), so Quit never reaches the icon's loop: any later round trip wakes it.
        - A request queued while another thread was sending can stay queued: the icon's loop then waits
          for events with nothing to write, and nobody sends it. So a new title (the icon's loop sets it)
          never reached the X server, and the icon kept showing the old state under load. A flush sends it.
        """
        keep_signals_off_this_thread()
        while not self.quitting.wait(UNSTICK_S):
            try:
                display.flush()
                display.pending_events()
            except Exception:  # noqa: BLE001 - the display went away: the icon is ending
                return

    def _toggle_pause(self, icon: Any, item: Any) -> None:
        self.runner.set_paused(not self.paused)
        self.status = self.runner.status()
        icon.update_menu()

    def _open_page(self, icon: Any, item: Any) -> None:
        webbrowser.open(self.page_url)

    def _open_dashboard(self, icon: Any, item: Any) -> None:
        webbrowser.open(self.dashboard_url)

    def _open_logs(self, icon: Any, item: Any) -> None:
        webbrowser.open(self.log_path.as_uri())

    def _quit(self, icon: Any, item: Any) -> None:
        self.quit()


def _select_clicks(icon: Any) -> None:
    """pystray 0.19's XEmbed icon window handles ButtonPress but never asks the X server for it, so a click
    on the icon does nothing; ask for it (a no-op on the other backends, which have no such window)."""
    window = getattr(icon, "_window", None)
    display = getattr(icon, "_display", None)
    if window is None or display is None or not hasattr(window, "change_attributes"):
        return
    from Xlib import X

    window.change_attributes(event_mask=X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask)
    display.flush()
