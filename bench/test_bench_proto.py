"""Hot pieces of the control path: replay window (Python reference vs C), the full
authenticated handshake (INIT -> RESPONSE -> CONFIRM, real certificates), certificate checks.

    pytest bench --benchmark-enable     # numbers
    pytest bench                        # correctness smoke only (benchmarks disabled)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from enclave import _fastpath as fp
from enclave.cert import (
    SystemIdentity,
    create_ca,
    issue_system_certificate,
    verify_system_certificate,
)
from enclave.cert import sign as ed_sign
from enclave.cert.keys import public_key_raw
from enclave.cert.names import random_system_name
from enclave.proto.handshake import (
    InitiatorHandshake,
    LocalCredentials,
    ResponderHandshake,
    validate_init,
)
from enclave.proto.replay import ReplayWindow

N = 4096  # counters per replay round
NOW = dt.datetime.now(dt.UTC)


def _replay_pattern() -> list[int]:
    # mostly in order, every 8th counter late by 100 (inside the window), every 64th a replay
    out: list[int] = []
    for i in range(N):
        c = i + 1000
        out.append(c - 100 if i % 8 == 0 else c)
        if i % 64 == 0:
            out.append(c - 1)
    return out


def _drive(window: Any, counters: list[int]) -> int:
    accepted = 0
    for c in counters:
        if window.check(c) and window.update(c):
            accepted += 1
    return accepted


def test_replay_window_python(benchmark: Any) -> None:
    counters = _replay_pattern()
    benchmark.group = "replay window"
    accepted = benchmark(lambda: _drive(ReplayWindow(), counters))
    benchmark.extra_info["counters_per_round"] = len(counters)
    assert accepted == _drive(fp.ReplayWindow(), counters)  # same verdicts as the C window
    assert 0 < accepted < len(counters)


def test_replay_window_c(benchmark: Any) -> None:
    counters = _replay_pattern()
    benchmark.group = "replay window"
    accepted = benchmark(lambda: _drive(fp.ReplayWindow(), counters))
    benchmark.extra_info["counters_per_round"] = len(counters)
    assert 0 < accepted < len(counters)


class _Pki:
    def __init__(self) -> None:
        self.ca_key, self.ca = create_ca("bench", now=NOW - dt.timedelta(days=1))
        self.n = 10

    def creds(self) -> tuple[LocalCredentials, bytes]:
        key = Ed25519PrivateKey.generate()
        self.n += 1
        name = random_system_name()
        cert = issue_system_certificate(
            self.ca_key, self.ca, key.public_key(), name=name, org="bench",
            overlay_ip=ipaddress.IPv4Address(f"100.64.0.{self.n}"), overlay_prefix=10,
            now=NOW - dt.timedelta(minutes=1), lifetime=dt.timedelta(days=1))
        der = cert.public_bytes(Encoding.DER)
        return LocalCredentials(name, der, lambda m: ed_sign(key, m), 0,
                                public_key_raw(key.public_key())), der

    def validate(self, der: bytes) -> SystemIdentity | None:
        return verify_system_certificate(der, self.ca, now=NOW)


def test_handshake_round(benchmark: Any) -> None:
    pki = _Pki()
    a, _ = pki.creds()
    b, _ = pki.creds()
    yes = lambda _name: True  # noqa: E731

    def handshake() -> tuple[bytes, bytes]:
        ini = InitiatorHandshake(a, responder_key=b.public_key, local_index=1, timestamp=1,
                                 random_bytes=os.urandom)
        validated = validate_init(ini.init_bytes, pki.validate, yes)
        assert validated is not None
        resp = ResponderHandshake(b, validated, local_index=2, random_bytes=os.urandom)
        got = ini.receive_response(resp.response_bytes, pki.validate, yes)
        assert got is not None
        confirm, ra = got
        rb = resp.receive_confirm(confirm)
        assert rb is not None
        return ra.keys.tx_key, rb.keys.rx_key

    benchmark.group = "handshake"
    tx, rx = benchmark(handshake)
    assert tx == rx and len(tx) == 32  # both sides derived the same directional key


def test_certificate_verification(benchmark: Any) -> None:
    pki = _Pki()
    creds, der = pki.creds()
    benchmark.group = "handshake"
    ident = benchmark(pki.validate, der)
    assert ident is not None and ident.name == creds.name
