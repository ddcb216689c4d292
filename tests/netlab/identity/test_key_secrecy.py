"""The private keys never appear in clear: not on disk, in any request, in logs or DB rows.

Every byte the agent sends is captured (before TLS encryption) by wrapping http.client's send;
the platform's stderr, its database files and both data directories are searched for every
common encoding of the raw private keys (and for the enrolment secret and admin token, which
the platform keeps only as hashes).
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from enclave.agent.enrol import enrol, renew, resume
from enclave.agent.state import StateDir
from enclave.cert.enrolment import EnrolmentToken, b64url
from enclave.cert.keystore import KeyStore, PrivateKey
from tests.support.platform import Platform


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    captured: list[bytes] = []
    original = http.client.HTTPConnection.send

    def spy(self: http.client.HTTPConnection, data: object) -> None:
        captured.append(bytes(data))  # type: ignore[call-overload]
        original(self, data)  # type: ignore[arg-type]

    monkeypatch.setattr(http.client.HTTPConnection, "send", spy)
    return captured


def encodings(key: PrivateKey) -> Iterator[bytes]:
    if hasattr(key, "private_bytes") and key.__class__.__name__.startswith("Ed25519"):
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    else:
        raw = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    yield raw
    yield raw.hex().encode()
    yield raw.hex().upper().encode()
    yield base64.b64encode(raw).rstrip(b"=")
    yield b64url(raw).encode()
    yield der
    yield base64.b64encode(der)[:60]
    yield pem.splitlines()[1]


def files(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def test_private_keys_never_in_clear(tmp_path: Path, sent: list[bytes]) -> None:
    p: Platform = Platform.loopback(tmp_path)
    try:
        token = p.new_token("--uses", "1")
        gated = p.new_token("--approval", "gated")
        s1, s2 = StateDir(tmp_path / "a1"), StateDir(tmp_path / "a2")
        enrol(token, s1)
        enrol(gated, s2)
        assert p.cli("systems", "approve", s2.load_enrolment().name).returncode == 0
        resume(s2)
        renew(s1)
        renew(s2)
        p.cli("systems", "revoke", s1.load_enrolment().name)
    finally:
        assert p.stop() == 0  # SIGTERM -> graceful shutdown, exit status 0
    assert "shutting down" in p.log()
    assert len(sent) >= 5

    agent_keys = [s.keystore().load() for s in (s1, s2)]
    platform_keys = [KeyStore(p.data / n, p.data / "keys.kek", "ENCLAVE_PLATFORM_KEY_PASSPHRASE",
                              "enclave-platform-key-passphrase").load()
                     for n in ("ca.key", "tls.key")]
    secrets = [EnrolmentToken.decode(t).secret for t in (token, gated)]
    secret_forms = [b64url(s).encode() for s in secrets] + [s.hex().encode() for s in secrets]

    haystacks: list[tuple[str, bytes]] = [(f"request {i}", b) for i, b in enumerate(sent)]
    haystacks.append(("platform log", p.log_path.read_bytes()))
    haystacks += [(str(path), data) for path, data in files(p.data)]
    for s in (s1, s2):
        haystacks += [(str(path), data) for path, data in files(s.root)]
    assert any("platform.db" in name for name, _ in haystacks)

    for key in agent_keys + platform_keys:
        for needle in encodings(key):
            for where, data in haystacks:
                assert needle not in data, f"private key material found in {where}"
    # the platform keeps only hashes of enrolment secrets and of the admin token
    for where, data in haystacks:
        if where.startswith("request"):
            continue  # the agent must send the enrolment secret to the platform
        for needle in secret_forms:
            assert needle not in data, f"enrolment secret found in {where}"
        assert p.admin_token.encode() not in data, f"admin token found in {where}"
    # the keys on disk are encrypted PKCS#8, the state files private
    for s in (s1, s2):
        assert s.key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert oct(s.key_path.stat().st_mode & 0o777) == "0o600"
        assert oct(s.kek_path.stat().st_mode & 0o777) == "0o600"
        assert oct(s.root.stat().st_mode & 0o777) == "0o700"
        assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in s.root.iterdir())
    for name in ("ca.key", "tls.key", "keys.kek", "platform.db"):
        assert oct((p.data / name).stat().st_mode & 0o777) == "0o600"
    assert oct(p.data.stat().st_mode & 0o777) == "0o700"


def test_agent_passphrase_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           ) -> None:
    p = Platform.loopback(tmp_path)
    try:
        monkeypatch.setenv("ENCLAVE_KEY_PASSPHRASE", "from the environment")
        state = StateDir(tmp_path / "a")
        enrol(p.new_token(), state)
        assert not state.kek_path.exists()  # nothing next to the key decrypts it
        renew(state)
        monkeypatch.setenv("ENCLAVE_KEY_PASSPHRASE", "wrong")
        with pytest.raises(Exception, match="wrong passphrase"):
            renew(state)
    finally:
        assert p.stop() == 0
