"""`enclave platform init --url A --url B` and `enclave platform urls list|add|remove`
(in-process, a real SQLite store): the list in the store, in new enrolment tokens, clear errors
for bad or last URLs; and a node opened on another data directory with --db: the keys and
certificates come from the store, and a directory holding another platform's is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from enclave.cert.enrolment import EnrolmentToken
from enclave.platform.app import Platform
from enclave.platform.cli import main as platform_main
from enclave.platform.errors import StoreError
from enclave.platform.paths import PlatformPaths
from tests.support.postgres import PostgresCluster

A, B, C = "https://10.0.0.1:8443", "https://10.0.0.2:8443", "https://10.0.0.3:8443"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = platform_main(["platform", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_urls_in_store_and_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data", str(tmp_path / "p")]
    assert _run(capsys, "init", *data, "--url", A, "--url", B)[0] == 0
    assert _run(capsys, "urls", "list", *data)[1].split() == [A, B]
    rc, out, _ = _run(capsys, "keys", "create", *data)
    assert rc == 0 and EnrolmentToken.decode(out.strip()).urls == (A, B)
    assert _run(capsys, "urls", "add", *data, C)[1].split() == [A, B, C]
    assert _run(capsys, "urls", "add", *data, C)[1].split() == [A, B, C]  # once
    assert _run(capsys, "urls", "remove", *data, A)[1].split() == [B, C]
    rc, out, _ = _run(capsys, "keys", "create", *data)
    assert EnrolmentToken.decode(out.strip()).urls == (B, C)  # the first is now B
    for args, message in (((C + "/x",), "HOST:PORT"), (("http://h:1",), "HOST:PORT")):
        rc, _, err = _run(capsys, "urls", "add", *data, *args)
        assert rc == 1 and message in err
    rc, _, err = _run(capsys, "urls", "remove", *data, A)
    assert rc == 1 and "not one of" in err
    assert _run(capsys, "urls", "remove", *data, B)[0] == 0
    rc, _, err = _run(capsys, "urls", "remove", *data, C)
    assert rc == 1 and "only URL" in err


def test_second_node_loads_keys_from_the_database(
        tmp_path: Path, postgres_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_PLATFORM_KEY_PASSPHRASE", "test-passphrase")
    url = postgres_cluster.create_database()
    first, second = tmp_path / "n1", tmp_path / "n2"
    assert _run(capsys, "init", "--data", str(first), "--db", url, "--url", A, "--url", B)[0] == 0
    # an admin command from another (empty) data directory reads the same store
    rc, out, err = _run(capsys, "urls", "list", "--data", str(second), "--db", url)
    assert rc == 0, err
    assert out.split() == [A, B]
    # a data directory with another platform's key is refused, not overwritten
    (second / "ca.crt").write_bytes(b"not ours")
    with pytest.raises(StoreError, match="another platform"):
        asyncio.run(Platform.open(PlatformPaths(second, url)))
    (second / "ca.crt").unlink()

    async def open_and_close() -> None:
        platform = await Platform.open(PlatformPaths(second, url))
        await platform.close()

    asyncio.run(open_and_close())
    for name in ("ca.crt", "ca.key", "tls.crt", "tls.key", "relay.key"):
        assert (second / name).read_bytes() == (first / name).read_bytes(), name
