"""`--db` / ENCLAVE_PLATFORM_DB on the `enclave platform` commands (in-process, real stores):
init on PostgreSQL writes no SQLite file and refuses a database that already holds a platform;
the admin commands reach the same store through the flag or the environment; a --db that is not
a PostgreSQL URL, or an unreachable server, is a clear error (never the password); without
--db nothing changes (SQLite in --data).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.platform.cli import main as platform_main
from tests.support.postgres import PostgresCluster
from tests.support.proc import free_port


def _init(data: Path, *db: str) -> int:
    return platform_main(["platform", "init", "--data", str(data), "--url",
                          "https://127.0.0.1:8443", *db])


def test_init_and_admin_commands_on_postgresql(tmp_path: Path, postgres_cluster: PostgresCluster,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres_cluster.create_database()
    assert _init(tmp_path / "a", "--db", url) == 0
    assert not (tmp_path / "a" / "platform.db").exists()
    capsys.readouterr()
    # a second platform on the same database is refused, whatever its data directory
    assert _init(tmp_path / "b", "--db", url) == 1
    assert "already holds a platform" in capsys.readouterr().err
    assert platform_main(["platform", "keys", "create", "--tags", "web", "--data",
                          str(tmp_path / "a"), "--db", url]) == 0
    capsys.readouterr()
    monkeypatch.setenv("ENCLAVE_PLATFORM_DB", url)  # the environment names the same store
    assert platform_main(["platform", "keys", "list", "--json", "--data",
                          str(tmp_path / "a")]) == 0
    keys = json.loads(capsys.readouterr().out)["keys"]
    assert len(keys) == 1 and keys[0]["tags"] == ["web"]
    monkeypatch.delenv("ENCLAVE_PLATFORM_DB")
    # without --db the same data directory has no SQLite store: a clear error
    assert platform_main(["platform", "keys", "list", "--data", str(tmp_path / "a")]) == 1
    assert "no platform database" in capsys.readouterr().err


def test_db_must_be_a_postgresql_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _init(tmp_path / "a", "--db", "mysql://x/y") == 1
    assert "--db must be a postgresql://" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert _init(tmp_path / "s") == 0  # the default: SQLite in the data directory
    assert (tmp_path / "s" / "platform.db").exists()


def test_unreachable_database_is_a_clear_error_without_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://admin:s3cret@127.0.0.1:{port}/enclave"
    assert _init(tmp_path / "a", "--db", url) == 1
    err = capsys.readouterr().err
    assert "cannot open platform database" in err and f"127.0.0.1:{port}" in err
    assert "s3cret" not in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()
