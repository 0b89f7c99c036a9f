"""`potluck doctor hub`: the hub's settings and the files in its data dir, each finding with its fix.

Whether the hub answers on its address (and its TLS) is checked by the same code the agent's doctor
uses; these are the checks only the hub's machine can make.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509

from potluck._shared.checkup import Check, Level, private_file, writable_dir
from potluck._shared.clock import Clock
from potluck._shared.paths import is_loopback
from potluck.hub.settings import HubSettings

CERT_EXPIRY_WARN_DAYS = 14


def hub_file_checks(settings: HubSettings, admin_token_file: str, clock: Clock) -> list[Check]:
    """Settings, data dir, database file, admin token hash, signing key, TLS files."""
    try:
        settings.validate()
    except ValueError as exc:
        return [Check("settings", Level.FAIL, str(exc), "fix the option it names")]
    data_dir = settings.data_dir
    checks = [writable_dir("data dir", data_dir), _database(settings)]
    if settings.admin_token:
        checks.append(Check("admin token", Level.OK, "given by --admin-token or POTLUCK_ADMIN_TOKEN; nothing stored"))
    else:
        path = data_dir / admin_token_file
        absent = Check("admin token", Level.WARN, f"{path} is missing: a new token is generated and printed on start")
        checks.append(private_file("admin token", path, missing=absent, secret=False))
    key = settings.resolved_signing_key_file
    absent_key = Check("signing key", Level.OK, f"no receipt signing key at {key} yet: created on first start")
    checks.append(private_file("signing key", key, missing=absent_key))
    checks += _tls(settings, clock)
    return checks


def _database(settings: HubSettings) -> Check:
    if settings.database_url is not None:
        scheme = settings.database_url.partition("://")[0]
        return Check("database", Level.OK, f"{scheme} database by --database-url (not opened here)")
    path = settings.data_dir / "potluck.db"
    if not path.exists():
        return Check("database", Level.WARN, f"{path} does not exist yet: it is created on first start")
    # The hub creates it with the umask's mode; inside a private data dir (0700) that is safe.
    if stat.S_IMODE(settings.data_dir.stat().st_mode) & 0o077:
        checked = private_file("database", path, secret=False)
        if checked.level is not Level.OK:
            return checked
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("database", Level.FAIL, f"{path} is not readable and writable by this user", f"chown $USER {path}")
    return Check("database", Level.OK, f"{path} ({path.stat().st_size} bytes)")


def _tls(settings: HubSettings, clock: Clock) -> list[Check]:
    if settings.tls_cert is None or settings.tls_key is None:
        if is_loopback(settings.host):
            return [Check("tls", Level.OK, f"plain HTTP on loopback ({settings.host})")]
        return [
            Check(
                "tls",
                Level.WARN,
                f"plain HTTP on {settings.host} (--allow-insecure-http): safe only behind a TLS-terminating proxy",
                "give --tls-cert and --tls-key, or make sure only the proxy can reach this port",
            )
        ]
    return [_certificate(settings.tls_cert, clock), private_file("tls key", settings.tls_key)]


def _certificate(path: Path, clock: Clock) -> Check:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        return Check("tls certificate", Level.FAIL, f"cannot read {path}: {exc.strerror}", "check --tls-cert")
    except ValueError:
        return Check("tls certificate", Level.FAIL, f"{path} is not a PEM certificate", "check --tls-cert")
    days = (cert.not_valid_after_utc - clock.wall()).days
    subject = cert.subject.rfc4514_string()
    if days < 0:
        return Check("tls certificate", Level.FAIL, f"{subject} expired {-days} days ago", "renew the certificate")
    if days < CERT_EXPIRY_WARN_DAYS:
        return Check("tls certificate", Level.WARN, f"{subject} expires in {days} days", "renew the certificate")
    return Check("tls certificate", Level.OK, f"{subject}, {days} days left")
