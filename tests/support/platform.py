"""The one platform harness: a real `enclave platform serve` process, on loopback or a lab host.

    plat = Platform.loopback(tmp)                 init + serve on 127.0.0.1 (free ports)
    plat = Platform.init(tmp, ip, port, runner(host), spawner(host), listen_host="0.0.0.0")
    plat.start() / plat.stop()                    the caller stops what it started
    with Platform.loopback(tmp) as plat: ...      stopped when the block ends
    plat.enrol(state_dir)                         `enclave enrol` a state dir; its name
    plat.cli("systems", "list", "--json")         `enclave platform ... --data DIR`
    plat.token() / plat.new_token("--tag", "web") enrolment tokens (unlimited / as given)
    plat.db() / plat.count(sql)                   the platform's SQLite file, read directly
    Platform.loopback(tmp, db=URL)                the store on PostgreSQL (every command
                                                  and the server get ENCLAVE_PLATFORM_DB)
"""

from __future__ import annotations

import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.proc import Runner, Spawner, enclave, free_port, local_popen, local_run, stop
from tests.support.wait import wait_for


@dataclass
class Platform:
    data: Path
    url: str
    listen: str
    run: Runner
    popen: Spawner
    log_path: Path
    proc: subprocess.Popen[Any] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    admin_token: str = ""  # the admin API token `platform init` printed (its last line)
    database: str | None = None  # postgresql://... URL of the store (None: SQLite in data)

    @classmethod
    def init(cls, tmp: Path, host: str, port: int, run: Runner = local_run,
             popen: Spawner = local_popen, listen_host: str | None = None,
             org: str = "acme", db: str | None = None) -> Platform:
        data = tmp / "platform"
        url = f"https://{host}:{port}"
        res = run(enclave("platform", "init", "--data", str(data), "--url", url, "--org", org,
                          *(("--db", db) if db else ())))
        assert res.returncode == 0, res.stderr
        admin_token = res.stdout.strip().splitlines()[-1]
        assert admin_token.startswith("enclave-admin-")
        plat = cls(data, url, f"{listen_host or host}:{port}", run, popen, tmp / "platform.log",
                   admin_token=admin_token, database=db)
        if db:
            plat.extra_env["ENCLAVE_PLATFORM_DB"] = db
        return plat

    @classmethod
    def loopback(cls, tmp: Path, *, org: str = "acme", db: str | None = None,
                 **env: str) -> Platform:
        """Initialised and serving on 127.0.0.1 (free API and discovery ports); ``env`` adds
        to the server's environment (e.g. ENCLAVE_PLATFORM_RELAY="off"). The caller stops it."""
        plat = cls.init(tmp, "127.0.0.1", free_port(), org=org, db=db)
        plat.extra_env["ENCLAVE_DISCOVERY_PORTS"] = f"{free_port()},{free_port()}"
        plat.extra_env.update(env)
        try:
            plat.start()
        except BaseException:
            plat.stop()
            raise
        return plat

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def start(self) -> None:
        log = open(self.log_path, "ab")
        cmd = enclave("--log-level", "debug", "platform", "serve", "--data", str(self.data),
                      "--listen", self.listen)
        self.proc = self.popen(["env", *(f"{k}={v}" for k, v in self.extra_env.items()), *cmd],
                               stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: "serving on" in self.log() or self.proc.poll() is not None,
                 timeout=20, what="platform start")
        assert self.proc.poll() is None, self.log()

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 10 s); the exit status, 0 if it was never started."""
        return stop(self.proc) if self.proc is not None else 0

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def enrol(self, state: Path) -> str:
        """`enclave enrol` a state directory here with a fresh unlimited token (on stdin, with
        this platform's runner); the system's name."""
        res = self.run(enclave("enrol", "--token-file", "-", "--state", str(state)),
                       input=self.token())
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`enclave platform ARGS --data DIR` through this platform's runner."""
        env = ["env", f"ENCLAVE_PLATFORM_DB={self.database}"] if self.database else []
        return self.run([*env, *enclave("platform", *args, "--data", str(self.data))])

    def new_token(self, *args: str) -> str:
        """`enclave platform keys create ARGS`: an enrolment token."""
        res = self.cli("keys", "create", *args)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def token(self, *extra: str) -> str:
        """An enrolment token without a use limit."""
        return self.new_token("--unlimited", *extra)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "platform.db", timeout=10, isolation_level=None)

    def count(self, sql: str, *params: object) -> int:
        with self.db() as db:
            return int(db.execute(sql, params).fetchone()[0])
