"""The CLI's side of the hub's user API: a small JSON-over-HTTP client and the login file.

Stdlib only (``urllib``), so the user commands need nothing beyond the base install. The login
file is ``$XDG_CONFIG_HOME/potluck/cli.json`` (``~/.config/potluck/cli.json`` when the variable is
unset), ``{"hub": URL, "token": TOKEN}``, written with mode 0600 in a directory with mode 0700. It
never holds a password.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from potluck._shared.paths import is_loopback

USER_AGENT = "potluck-cli"
TIMEOUT_S = 30.0


class HubError(Exception):
    """A failed call: the hub's error message (or why the hub could not be reached)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


# -- the login file ---------------------------------------------------------------------------------


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/potluck/cli.json``, falling back to ``~/.config/potluck/cli.json``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "potluck" / "cli.json"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The stored ``{"hub", "token"}`` (either may be missing); ``{}`` when there is no file."""
    path = path or config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise HubError(f"cannot read {path}: not a JSON object")
    return {k: v for k, v in data.items() if k in ("hub", "token") and isinstance(v, str)}


def save_config(config: dict[str, str], path: Path | None = None) -> Path:
    """Write the login file atomically: directory 0700, file 0600 from the moment it exists."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    # mkstemp creates the file with mode 0600; os.replace keeps that mode.
    fd, tmp = tempfile.mkstemp(prefix=".cli-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# -- URLs and durations -----------------------------------------------------------------------------


def normalize_hub(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; a bare host gets ``https://``."""
    url = url.strip()
    if "://" not in url:
        url = "https://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubError(f"not a hub URL: {url!r} (expected http(s)://host:port)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise HubError(f"not a hub URL: {url!r} (no credentials, query or fragment)")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def is_insecure(url: str) -> bool:
    """True for plain ``http://`` to a host other than this machine: secrets would cross the network."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname or "")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``3600``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w`` as whole seconds (at least 1)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 3600, 30m, 12h, 7d)")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be positive")
    return seconds


# -- HTTP -------------------------------------------------------------------------------------------


def _error_message(status: int, raw: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI-shaped error body, or a fallback naming the status."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message, code = error.get("message"), error.get("code")
        if isinstance(message, str) and message:
            return message, code if isinstance(code, str) else None
    return f"the hub answered HTTP {status}", None


def request(
    method: str, hub: str, path: str, *, token: str | None = None, body: Any = None, timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    """One JSON call to the hub; the parsed answer, or `HubError` with the hub's message."""
    raw = request_bytes(method, hub, path, token=token, body=body, timeout=timeout)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise HubError(f"the hub at {hub} did not answer JSON") from None
    if not isinstance(parsed, dict):
        raise HubError(f"the hub at {hub} answered an unexpected {type(parsed).__name__}")
    return parsed


def request_bytes(
    method: str,
    hub: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    accept: str = "application/json",
    timeout: float = TIMEOUT_S,
) -> bytes:
    """One call to the hub; the answer's bytes as sent (a CSV report, a signed receipt), or `HubError`."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(hub + path, data=data, method=method)  # noqa: S310 - scheme checked
    req.add_header("Accept", accept)
    req.add_header("User-Agent", USER_AGENT)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            message, code = _error_message(exc.code, exc.read())
        raise HubError(message, exc.code, code) from None
    except urllib.error.URLError as exc:
        raise HubError(f"cannot reach the hub at {hub}: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise HubError(f"cannot reach the hub at {hub}: {exc}") from None
