"""A real PostgreSQL server for tests: initdb into a temporary folder, `postgres` on a free loopback port.

`PostgresServer.start()` finds Debian's (or any PATH) PostgreSQL binaries, initialises a throwaway cluster
with trust authentication and runs it with durability off (fsync, synchronous commit and full-page writes:
a test database never outlives its test run). The server listens on 127.0.0.1 and keeps its unix socket in
the temporary folder. PostgreSQL refuses to run as root, so under root the server runs as an unprivileged
account (`postgres` when Debian's package created it, else `nobody`), switched to by `subprocess` itself.

`create_database()` makes a new, empty database cheaply; `create_database(template=...)` clones one (a
migrated template costs one `CREATE DATABASE ... TEMPLATE`, tens of milliseconds, instead of a full
migration per test). Databases are reached as `postgresql+asyncpg://potluck@127.0.0.1:<port>/<name>`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from testing.processes import free_port

SUPERUSER = "potluck"


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries were found on this machine."""


def find_bindir() -> Path:
    """The folder holding `initdb` and `postgres`: the newest Debian version, else what `pg_config` says."""
    debian = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailableError(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH); "
        "scripts/install-system installs it"
    )


def _run_as() -> str | None:
    """The account the server runs as when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailableError("running as root and neither a 'postgres' nor a 'nobody' account exists")


class PostgresServer:
    """One throwaway PostgreSQL cluster. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = 0
        self.host = "127.0.0.1"
        self._user = _run_as()
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    @property
    def data_dir(self) -> Path:
        assert self._root is not None
        return self._root / "data"

    def _as_user(self) -> dict[str, object]:
        if self._user is None:
            return {}
        entry = pwd.getpwnam(self._user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 30.0) -> PostgresServer:
        self._root = Path(tempfile.mkdtemp(prefix="potluck-pg-"))
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self._root, entry.pw_uid, entry.pw_gid)
        init = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._as_user(),  # type: ignore[call-overload]
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()}")
        self.port = free_port()
        self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        assert self._root is not None
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-k",
                    str(self._root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=subprocess.DEVNULL,
                # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe would block every
                # backend that logs (an error, a deadlock report) until the test hangs.
                stderr=log,
                **self._as_user(),  # type: ignore[call-overload]
            )
        self._wait_ready(timeout)

    @property
    def log_path(self) -> Path:
        """The server's log (its stderr), kept until `stop`."""
        assert self._root is not None
        return self._root / "postgres.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def restart(self, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown: every client connection is cut) and start it again on the same
        port with the same data, as an operator's restart or a failover does."""
        self.halt()
        self.resume(timeout)

    def halt(self) -> None:
        """The first half of `restart`: stop the server (fast shutdown) and keep its data and port, so a test
        can watch its clients while it is down."""
        self._shutdown()

    def resume(self, timeout: float = 30.0) -> None:
        """The second half of `restart`: start the halted server again on the same port with the same data."""
        if self._proc is not None:
            raise RuntimeError("postgres is running; halt() it first")
        self._launch(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                err = self.log()[-4000:]
                raise RuntimeError(f"postgres exited with {self._proc.returncode}: {err.strip()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)  # polling a server that has no readiness event to wait on
        raise RuntimeError(f"postgres did not accept connections within {timeout} s")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser; returns psql's unaligned output."""
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new database (a clone of `template` when given); returns its SQLAlchemy URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        self.psql(f"CREATE DATABASE {name}{clause}")
        return self.url(name)

    def stop(self) -> None:
        self._shutdown()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _shutdown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, close clients, exit.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
