"""A throwaway PostgreSQL cluster: `enclave bench platform` and the test suite start one.

    cluster = PostgresCluster.start()      # initdb in /tmp/enclave-pg-PID, own port + socket dir
    url = cluster.create_database()         # a fresh database: postgresql://enclave@/NAME?host=...
    cluster.stop()                          # pg_ctl stop, directory removed

The server listens only on a Unix socket in the cluster's own directory (no TCP port to clash
with), on a port number of its own (part of the socket's name); fsync is off (nothing in it is
meant to survive). initdb refuses to run as root, so as root the cluster runs as the
``postgres`` user of Debian's package (else as the current user). A run that was killed leaves
its directory behind: start() stops and removes every /tmp/enclave-pg-PID whose PID is gone;
atexit is the backstop for a normal exit.

The binaries come from Debian's ``postgresql`` package (/usr/lib/postgresql/N/bin, not on PATH);
PostgresMissing when they are not installed.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from enclave.localport import free_port

PREFIX = "enclave-pg-"
USER = "enclave"
_names = itertools.count(1)


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are (Debian: the newest /usr/lib/postgresql/N/bin)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    if versions:
        return versions[-1].parent
    raise PostgresMissing("PostgreSQL server binaries not found (apt-get install postgresql)")


def _runas() -> str | None:
    """The user the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresMissing("running as root and there is no 'postgres' user to run the "
                              "server as (Debian's postgresql package creates it)") from None
    return "postgres"


def remove_leftovers(tmp: Path | None = None) -> list[Path]:
    """Stop and delete clusters of earlier runs whose test process is gone; what was removed."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*"):
        pid = path.name[len(PREFIX):]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        pidfile = path / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int(pidfile.read_text().splitlines()[0])
            os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@dataclass
class PostgresCluster:
    root: Path
    port: int
    bindir: Path
    user: str | None
    owner: int = field(default_factory=os.getpid)  # the process that started it

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @classmethod
    def start(cls) -> PostgresCluster:
        bindir = find_bindir()
        user = _runas()
        remove_leftovers()
        root = Path(tempfile.gettempdir()) / f"{PREFIX}{os.getpid()}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(mode=0o700)
        (root / "sock").mkdir(mode=0o700)
        if user is not None:
            info = pwd.getpwnam(user)
            for p in (root, root / "sock"):
                os.chown(p, info.pw_uid, info.pw_gid)
        cluster = cls(root, free_port(), bindir, user)
        atexit.register(cluster.stop)
        try:
            cluster._run("initdb", "-D", str(root / "data"), "-U", USER, "--auth=trust",
                         "--locale=C", "-E", "UTF8", "--no-sync")
            options = (f"-k {root / 'sock'} -p {cluster.port} -c listen_addresses='' "
                       "-c fsync=off -c full_page_writes=off -c max_connections=200")
            cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"),
                         "-o", options, "-w", "-t", "60", "start")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self.bindir / tool), *args], user=self.user,
                                capture_output=True, text=True, timeout=120, cwd=self.root)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr[-2000:]}"
                               f"{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        # atexit hooks are inherited by forked children (pyroute2's netns helpers, forked
        # workers): only the process that started the cluster may stop it.
        if os.getpid() != self.owner or not self.root.exists():
            return
        if (self.root / "data" / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w",
                          "stop")
        shutil.rmtree(self.root, ignore_errors=True)
