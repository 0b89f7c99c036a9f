"""Where things live, and which addresses are this machine's own."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit


def default_data_dir(component: str) -> Path:
    """``$XDG_DATA_HOME/potluck/<component>``, falling back to ``~/.local/share/potluck/<component>``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "potluck" / component


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (and an empty host, meaning this machine)."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def suggest_scheme(url: str) -> str:
    """A URL given without a scheme, with the likely one: ``http://`` for this machine, else ``https://``."""
    host = urlsplit("//" + url.strip()).hostname or ""
    return ("http://" if is_loopback(host) else "https://") + url.strip()
