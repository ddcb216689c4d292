"""The discovery reflector spends a system's rate tokens only on requests that system signed,
and keeps per-system buckets in a bounded LRU (no reset of everyone's limit)."""

from __future__ import annotations

from enclave.cert.keys import generate_private_key, public_key_raw, sign
from enclave.platform import discovery
from enclave.platform.discovery import Reflector
from enclave.proto import wire

NOW = 1_800_000_000


def _request(key: object, name: str = "AAAAA", nonce: bytes = b"n" * 16) -> bytes:
    part = wire.reflect_signed_part(NOW, nonce, name)
    return part + sign(key, wire.REFLECT_DOMAIN + part)  # type: ignore[arg-type]


def test_forged_requests_do_not_use_up_the_victims_budget() -> None:
    victim, attacker = generate_private_key(), generate_private_key()
    core = Reflector(lambda n: public_key_raw(victim) if n == "AAAAA" else None,
                     clock=lambda: NOW)
    for i in range(500):  # requests naming the victim, signed with the wrong key
        assert core.handle(_request(attacker, nonce=i.to_bytes(16, "big")), "198.18.9.9",
                           i + 1) is None
    for i in range(100):  # and under names that do not exist: no state for any of them
        core.handle(_request(attacker, name=f"Z{i:04d}", nonce=b"z" * 14 + i.to_bytes(2, "big")),
                    "198.18.9.9", 1)
    assert core.tracked() == 0
    reply = core.handle(_request(victim, nonce=b"v" * 16), "198.18.1.1", 40000)
    assert reply is not None  # the victim is still answered


def test_many_names_do_not_reset_the_limit(monkeypatch: object) -> None:
    key = generate_private_key()
    core = Reflector(lambda n: public_key_raw(key), clock=lambda: NOW)
    answered = sum(core.handle(_request(key, nonce=i.to_bytes(16, "big")), "198.18.1.1", 9)
                   is not None for i in range(100))
    assert answered == int(discovery.RATE_PER_SYSTEM)  # AAAAA's burst is used up
    # more names than the nonce cache holds (at 1eeaf5c: every bucket was cleared then), but
    # no more than the bucket LRU holds: AAAAA's empty bucket must not come back full
    monkeypatch.setattr(discovery, "NONCE_CACHE", 8)  # type: ignore[attr-defined]
    monkeypatch.setattr(discovery, "MAX_TRACKED", 9, raising=False)  # type: ignore[attr-defined]
    for i in range(8):
        assert core.handle(_request(key, name=f"N{i:04d}", nonce=b"x" * 15 + bytes([i])),
                           "1.2.3.4", 1) is not None
    assert core.handle(_request(key, nonce=b"late" * 4), "198.18.1.1", 9) is None
    assert core.tracked() == 9
