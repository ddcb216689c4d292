"""Bad input against a real platform process: a clear error, no partial rows, nothing issued."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave.agent.client import PinnedClient
from enclave.agent.enrol import enrol, resume, signed_request
from enclave.agent.errors import AgentError, PinMismatch
from enclave.agent.state import StateDir
from enclave.cert import build_csr, generate_private_key
from enclave.cert.enrolment import PATH_ENROL, PATH_SYSTEM_CERT, EnrolmentToken, b64url
from enclave.cert.enrolment import system_request_message as msg
from enclave.cert.keys import sign
from tests.support.platform import Platform
from tests.support.proc import run_cli


def post_raw(c: PinnedClient, path: str, payload: bytes) -> tuple[int, dict[str, object]]:
    conn = c._connect()
    try:
        conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        try:
            body = json.loads(data)
        except ValueError:
            body = {"error": data.decode(errors="replace")}
        return resp.status, body
    finally:
        conn.close()


def enrol_body(token: EnrolmentToken, csr: bytes | None = None, **over: object) -> bytes:
    body: dict[str, object] = {
        "key_id": token.key_id,
        "secret": b64url(token.secret),
        "csr": base64.b64encode(csr if csr is not None else build_csr(generate_private_key()))
        .decode(),
        "hostname": "h",
    }
    body.update(over)
    return json.dumps(body).encode()


def totals(p: Platform) -> tuple[int, int, int]:
    return (p.count("SELECT COUNT(*) FROM systems"), p.count("SELECT COUNT(*) FROM certificates"),
            p.count("SELECT COALESCE(SUM(uses), 0) FROM enrolment_keys"))


def test_wrong_expired_revoked_token(platform: Platform, tmp_path: Path) -> None:
    p = platform
    token = EnrolmentToken.decode(p.new_token())
    before = totals(p)
    bad_secret = replace(token, secret=b"\x00" * 32).encode()
    with pytest.raises(AgentError, match="invalid enrolment token"):
        enrol(bad_secret, StateDir(tmp_path / "a"))
    with pytest.raises(AgentError, match="invalid enrolment token"):
        enrol(replace(token, key_id="nope").encode(), StateDir(tmp_path / "b"))
    expired = EnrolmentToken.decode(p.new_token("--expires", "1h"))
    with p.db() as db:
        db.execute("UPDATE enrolment_keys SET expires_at = ? WHERE id = ?",
                   (int(time.time()) - 1, expired.key_id))
    with pytest.raises(AgentError, match="expired"):
        enrol(expired.encode(), StateDir(tmp_path / "c"))
    for garbage in ("", "hello", "enclave1-!!!", "enclave1-" + b64url(b'{"u": 1}')):
        with pytest.raises(AgentError, match="token"):
            enrol(garbage, StateDir(tmp_path / "d"))
    res = run_cli("enrol", "enclave1-garbage", "--state", str(tmp_path / "e"))
    assert res.returncode == 1 and "token" in res.stderr and "Traceback" not in res.stderr
    assert totals(p) == before
    for d in "abcde":  # a failed enrolment leaves no key or half state behind
        assert not (tmp_path / d / "key.pem").exists()
        assert not (tmp_path / d / "enrolment.json").exists()
    # the original token still works exactly once
    assert enrol(token.encode(), StateDir(tmp_path / "ok")).state == "active"
    with pytest.raises(AgentError, match="used up"):
        enrol(token.encode(), StateDir(tmp_path / "again"))
    with pytest.raises(AgentError, match="already enrolled"):
        enrol(p.new_token(), StateDir(tmp_path / "ok"))


def test_wrong_fingerprint_sends_nothing(platform: Platform, tmp_path: Path) -> None:
    p = platform
    token = EnrolmentToken.decode(p.new_token())
    before = totals(p)
    log_before = p.log()
    wrong = replace(token, pin="ab" * 32).encode()
    with pytest.raises(PinMismatch, match="refusing"):
        enrol(wrong, StateDir(tmp_path / "a"))
    res = run_cli("enrol", wrong, "--state", str(tmp_path / "b"))
    assert res.returncode == 1 and "pins" in res.stderr and "Traceback" not in res.stderr
    assert totals(p) == before
    assert p.log() == log_before  # no request reached the platform's handlers
    assert not (tmp_path / "a" / "key.pem").exists()


def _ec_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def test_malformed_requests_change_nothing(platform: Platform) -> None:
    p = platform
    token = EnrolmentToken.decode(p.new_token("--uses", "1"))
    c = PinnedClient(token.url, token.pin)
    before = totals(p)
    bad_sig = bytearray(build_csr(generate_private_key()))
    bad_sig[-3] ^= 0x55
    cases: list[tuple[bytes, int, str]] = [
        (b"not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"{}", 400, "key_id"),
        (enrol_body(token, csr=b"\x30\x82garbage"), 400, "malformed CSR"),
        (enrol_body(token, csr=b"\x30" * 5000), 400, "too large"),
        (enrol_body(token, csr=bytes(bad_sig)), 400, "signature"),
        (enrol_body(token, csr=_ec_csr()), 400, "Ed25519"),
        (enrol_body(token).replace(b'"csr": "', b'"csr": "***'), 400, "not valid base64"),
        (enrol_body(token, hostname="a\nb"), 400, "control characters"),
        (enrol_body(token, hostname=5), 400, "hostname"),
        (b'{"pad": "' + b"x" * 100_000 + b'"}', 413, ""),
    ]
    for payload, status, why in cases:
        got, body = post_raw(c, PATH_ENROL, payload)
        assert got == status, (payload[:80], got, body)
        assert why in str(body.get("error", "")), body
    assert totals(p) == before
    # the key was not consumed by any of them
    assert post_raw(c, PATH_ENROL, enrol_body(token))[0] == 201


def test_database_error_mid_enrolment(platform: Platform, tmp_path: Path) -> None:
    p = platform
    token = p.new_token("--uses", "1")
    before = totals(p)
    with p.db() as db:  # a real SQLite failure after the system row, before the certificate row
        db.execute("CREATE TRIGGER fail_cert BEFORE INSERT ON certificates "
                   "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    try:
        with pytest.raises(AgentError, match="database error"):
            enrol(token, StateDir(tmp_path / "a"))
        assert totals(p) == before  # the transaction rolled back: no system, no use, no cert
        assert "injected failure" in p.log()
    finally:
        with p.db() as db:
            db.execute("DROP TRIGGER fail_cert")
    assert not (tmp_path / "a" / "key.pem").exists()
    assert enrol(token, StateDir(tmp_path / "b")).state == "active"


def test_concurrent_enrolments_never_exceed_uses(platform: Platform) -> None:
    p = platform
    token = EnrolmentToken.decode(p.new_token("--uses", "5"))
    c = PinnedClient(token.url, token.pin, timeout=30)
    bodies = [enrol_body(token, hostname=f"h{i}") for i in range(24)]
    gate = threading.Barrier(24)

    def go(body: bytes) -> tuple[int, dict[str, object]]:
        gate.wait(timeout=10)
        return post_raw(c, PATH_ENROL, body)

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(go, bodies))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 5, statuses
    assert statuses.count(403) == 19, statuses
    assert all("used up" in str(b["error"]) for s, b in results if s == 403)
    names = {b["name"] for s, b in results if s == 201}
    ips = {b["overlay_ip"] for s, b in results if s == 201}
    assert len(names) == len(ips) == 5
    assert p.count("SELECT uses FROM enrolment_keys WHERE id = ?", token.key_id) == 5
    assert p.count("SELECT COUNT(*) FROM systems WHERE key_id = ?", token.key_id) == 5


def test_signed_request_negatives(platform: Platform, tmp_path: Path) -> None:
    p = platform
    state = StateDir(tmp_path / "a")
    enrol(p.new_token(), state)
    record = state.load_enrolment()
    key = state.keystore().load_ed25519()
    c = PinnedClient(record.url, record.pin)

    def body(name: str, ts: int, nonce: str, signer: object = key, action: str = "fetch") -> bytes:
        sig = sign(signer, msg(action, name, ts, nonce))  # type: ignore[arg-type]
        return json.dumps({"name": name, "action": action, "timestamp": ts, "nonce": nonce,
                           "signature": base64.b64encode(sig).decode()}).encode()

    now = int(time.time())
    nonce = b64url(b"n" * 16)
    assert post_raw(c, PATH_SYSTEM_CERT, body(record.name, now, nonce))[0] == 200
    status, err = post_raw(c, PATH_SYSTEM_CERT, body(record.name, now, nonce))
    assert status == 401 and "replayed" in str(err["error"])
    status, err = post_raw(c, PATH_SYSTEM_CERT, body(record.name, now - 3600, b64url(b"o" * 16)))
    assert status == 401 and "timestamp" in str(err["error"])
    other = generate_private_key()
    status, err = post_raw(c, PATH_SYSTEM_CERT,
                           body(record.name, now, b64url(b"p" * 16), signer=other))
    assert status == 401 and "authentication failed" in str(err["error"])
    status, err = post_raw(c, PATH_SYSTEM_CERT, body("ZZZZZ", now, b64url(b"q" * 16)))
    assert status == 401
    status, err = post_raw(c, PATH_SYSTEM_CERT,
                           body(record.name, now, b64url(b"r" * 16), action="admin"))
    assert status == 400
    # the genuine client still works
    assert signed_request(state, record, key, "renew")[0] == 200


def test_resume_polls_until_approved(platform: Platform, tmp_path: Path) -> None:
    p = platform
    state = StateDir(tmp_path / "g")
    result = enrol(p.new_token("--approval", "gated"), state)
    assert result.state == "pending"
    timer = threading.Timer(0.3, lambda: p.cli("systems", "approve", result.name))
    timer.start()
    try:
        assert resume(state, wait=20, poll_interval=0.2).state == "active"
    finally:
        timer.join()
    assert state.identity(datetime.datetime.now(datetime.UTC)).name == result.name
    # polling that times out reports pending instead of hanging
    other = StateDir(tmp_path / "h")
    enrol(p.new_token("--approval", "gated"), other)
    t0 = time.monotonic()
    assert resume(other, wait=0.5, poll_interval=0.2).state == "pending"
    assert time.monotonic() - t0 < 10


def test_corrupt_state_and_database(platform: Platform, tmp_path: Path) -> None:
    p = platform
    s = tmp_path / "a"
    enrol(p.new_token(), StateDir(s))
    original = (s / "enrolment.json").read_bytes()
    for content in (b"{not json", b"[]", b'{"url": 1}'):
        (s / "enrolment.json").write_bytes(content)
        res = run_cli("renew", "--force", "--state", str(s))
        assert res.returncode == 1 and "corrupt" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    (s / "enrolment.json").write_bytes(original)
    (s / "key.pem").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx\n")
    res = run_cli("renew", "--force", "--state", str(s))
    assert res.returncode == 1 and "private key" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("renew", "--state", str(tmp_path / "missing"))
    assert res.returncode == 1 and "not found" in res.stderr

    # a copy of the platform data dir with a corrupt database
    copy = tmp_path / "plat"
    shutil.copytree(p.data, copy)
    (copy / "platform.db").write_bytes(b"this is not a database" * 100)
    for f in ("platform.db-wal", "platform.db-shm"):
        (copy / f).unlink(missing_ok=True)
    for args in (("systems", "list"), ("keys", "create"), ("serve", "--listen", "127.0.0.1:1")):
        res = run_cli("platform", *args, "--data", str(copy))
        assert res.returncode == 1, res
        assert "platform database" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("platform", "systems", "list", "--data", str(tmp_path / "nothing"))
    assert res.returncode == 1 and "platform init" in res.stderr
    res = run_cli("platform", "init", "--data", str(p.data), "--url", p.url)
    assert res.returncode == 1 and "refusing to overwrite" in res.stderr
