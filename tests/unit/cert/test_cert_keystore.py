"""Encrypted key storage and atomic private files (real files in tmp_path)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from enclave.cert import KeyStore, KeyStoreError, generate_private_key, public_key_raw
from enclave.cert.files import atomic_write, ensure_private_dir


def raw_private(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_kek_file_round_trip_and_modes(tmp_path: Path) -> None:
    d = ensure_private_dir(tmp_path / "state")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    ks = KeyStore(d / "key.pem", d / "key.kek")
    key = generate_private_key()
    ks.save(key, environ={})
    assert stat.S_IMODE((d / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "key.kek").stat().st_mode) == 0o600
    pem = (d / "key.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert raw_private(key) not in pem
    loaded = ks.load_ed25519(environ={})
    assert public_key_raw(loaded) == public_key_raw(key)
    # no temp files left behind
    assert sorted(p.name for p in d.iterdir()) == ["key.kek", "key.pem"]


def test_env_passphrase_takes_precedence_and_writes_no_kek(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "key.pem", tmp_path / "key.kek")
    key = generate_private_key()
    ks.save(key, environ={"ENCLAVE_KEY_PASSPHRASE": "correct horse"})
    assert not (tmp_path / "key.kek").exists()
    assert public_key_raw(ks.load(environ={"ENCLAVE_KEY_PASSPHRASE": "correct horse"})) == (
        public_key_raw(key)
    )
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        ks.load(environ={"ENCLAVE_KEY_PASSPHRASE": "battery staple"})
    with pytest.raises(KeyStoreError, match="no key-encryption key"):
        ks.load(environ={})


def test_systemd_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "enclave-key-passphrase").write_bytes(b"from-systemd\n")
    ks = KeyStore(tmp_path / "key.pem", tmp_path / "key.kek")
    key = generate_private_key()
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    ks.save(key, environ=env)
    assert not (tmp_path / "key.kek").exists()
    assert public_key_raw(ks.load(environ={"ENCLAVE_KEY_PASSPHRASE": "from-systemd"})) == (
        public_key_raw(key)
    )


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
     b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"],
)
def test_corrupt_key_file_gives_clear_error(tmp_path: Path, content: bytes) -> None:
    ks = KeyStore(tmp_path / "key.pem", tmp_path / "key.kek")
    ks.save(generate_private_key(), environ={})
    (tmp_path / "key.pem").write_bytes(content)
    with pytest.raises(KeyStoreError):
        ks.load(environ={})


def test_missing_or_corrupt_kek(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "key.pem", tmp_path / "key.kek")
    with pytest.raises(KeyStoreError, match="not found"):
        ks.load(environ={})
    ks.save(generate_private_key(), environ={})
    (tmp_path / "key.kek").write_bytes(b"x")
    with pytest.raises(KeyStoreError, match="corrupt"):
        ks.load(environ={})
    os.unlink(tmp_path / "key.kek")
    with pytest.raises(KeyStoreError, match="no key-encryption key"):
        ks.load(environ={})


def test_atomic_write_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"one")
    atomic_write(target, b"two", 0o640)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
