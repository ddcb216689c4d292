"""MAC1 / MAC2 / cookies (enclave.proto.cookie) and the INIT gate (enclave.proto.admission).

Real keys (libsodium Ed25519), real INITs from InitiatorHandshake, no network."""

from __future__ import annotations

import os

import pytest
from nacl.signing import SigningKey

from enclave.discovery import PathAddr, Transport
from enclave.proto import timing as T
from enclave.proto import wire as W
from enclave.proto.admission import InitGate
from enclave.proto.cookie import (
    CookieChecker,
    CookieJar,
    KeyedMac,
    mac1_key,
    open_cookie_reply,
    stamp_init,
)
from enclave.proto.handshake import InitiatorHandshake, LocalCredentials

SRC = b"udp|198.18.1.1|40000"
OTHER_SRC = b"udp|198.18.1.1|40001"


def creds(name: str = "AAAAA", cert: bytes = b"C" * 300) -> LocalCredentials:
    sk = SigningKey.generate()
    return LocalCredentials(name, cert, lambda m: sk.sign(m).signature, 0,
                            bytes(sk.verify_key))


def init_to(responder: LocalCredentials, *, index: int = 7, ts: int = 1) -> InitiatorHandshake:
    return InitiatorHandshake(creds(), responder_key=responder.public_key, local_index=index,
                              timestamp=ts, random_bytes=os.urandom)


def test_init_wire_layout() -> None:
    r = creds("BBBBB")
    hs = init_to(r)
    msg = hs.init_bytes
    assert msg[:4] == bytes([W.MSG_HANDSHAKE_INIT, 0, 0, 0]) == bytes.fromhex("06000000")
    assert len(msg) == W.INIT_FIXED_SIZE + 300 == 148 + 300 + 32
    body, mac1, mac2 = msg[:-32], msg[-32:-16], msg[-16:]
    assert body == hs.init_body and mac1 == hs.mac1 and mac2 == bytes(16)
    assert mac1 == KeyedMac(mac1_key(r.public_key)).digest(body)
    decoded = W.decode_init(msg)
    assert decoded.body() == body and decoded.mac1 == mac1 and decoded.encode() == msg
    # the retired type 1 is not an INIT any more; sizes still fit one IPv6 datagram
    assert W.MSG_HANDSHAKE_INIT_V1 == 1 and W.MSG_HANDSHAKE_INIT != 1
    assert W.MAX_HANDSHAKE_SIZE <= 1500 - W.IPV6_UDP_OVERHEAD
    assert W.COOKIE_REPLY_SIZE == 64 < W.INIT_FIXED_SIZE  # a reply never amplifies


@pytest.mark.parametrize(
    ("case", "mutate", "valid"),
    [
        (1, lambda m: m, True),
        (2, lambda m: m[:-17] + bytes([m[-17] ^ 1]) + m[-16:], False),  # mac1 flipped
        (3, lambda m: m[:100] + bytes([m[100] ^ 1]) + m[101:], False),  # cert byte flipped
        (4, lambda m: m[:-1] + bytes([m[-1] ^ 1]), True),  # mac2 is not covered by mac1
        (5, lambda m: m[:-1], False),  # truncated
        (6, lambda m: m + b"\0", False),  # trailing byte
        (7, lambda m: b"\x01" + m[1:], False),  # the retired type
        (8, lambda m: m[:1] + b"\x01" + m[2:], False),  # reserved byte
        (9, lambda m: os.urandom(len(m)), False),  # junk of the right size
        (10, lambda m: m[:4] + os.urandom(len(m) - 4), False),  # junk behind the type word
        (11, lambda m: b"", False),
    ],
)
def test_mac1_check(case: int, mutate, valid: bool) -> None:  # type: ignore[no-untyped-def]
    r = creds("BBBBB")
    checker = CookieChecker(r.public_key, os.urandom)
    assert checker.check_mac1(mutate(init_to(r).init_bytes)) is valid, case


def test_mac1_needs_the_responders_key() -> None:
    r, other = creds("BBBBB"), creds("CCCCC")
    msg = init_to(other).init_bytes  # made for someone else
    assert not CookieChecker(r.public_key, os.urandom).check_mac1(msg)
    assert CookieChecker(other.public_key, os.urandom).check_mac1(msg)


def test_cookie_round_trip_and_binding_to_the_source() -> None:
    r = creds("BBBBB")
    checker = CookieChecker(r.public_key, os.urandom)
    hs = init_to(r, index=0x11223344)
    reply = checker.reply(hs.init_bytes, SRC, 10.0)
    assert len(reply) == W.COOKIE_REPLY_SIZE and reply[:8].hex() == "07000000" "44332211"
    got = open_cookie_reply(reply, r.public_key, hs.mac1)
    assert got is not None and got[0] == 0x11223344
    msg2 = hs.message(got[1])
    assert msg2[:-16] == hs.init_bytes[:-16] and msg2[-16:] != bytes(16)
    assert checker.check_mac1(msg2)
    assert checker.check_mac2(msg2, SRC, 11.0)
    assert not checker.check_mac2(msg2, OTHER_SRC, 11.0)  # another port: another cookie
    assert not checker.check_mac2(hs.init_bytes, SRC, 11.0)  # no MAC2
    # a cookie for one INIT works for the next INIT from the same source (retries)
    hs2 = init_to(r, index=5, ts=2)
    assert checker.check_mac2(hs2.message(got[1]), SRC, 12.0)


def test_cookie_secret_rotates() -> None:
    r = creds("BBBBB")
    checker = CookieChecker(r.public_key, os.urandom)
    hs = init_to(r)
    got = open_cookie_reply(checker.reply(hs.init_bytes, SRC, 0.0), r.public_key, hs.mac1)
    assert got is not None
    msg2 = hs.message(got[1])
    assert checker.check_mac2(msg2, SRC, T.COOKIE_SECRET_LIFETIME - 1)
    assert not checker.check_mac2(msg2, SRC, T.COOKIE_SECRET_LIFETIME + 1)  # new secret


def test_cookie_jar_expiry_and_bounds() -> None:
    jar = CookieJar()
    a = PathAddr(Transport.UDP, "198.18.2.2", 51820)
    assert jar.store(a, b"k" * 16, 0.0) is True
    assert jar.store(a, b"k" * 16, 1.0) is False  # the same cookie again: not new
    assert jar.get(a, 2.0) == b"k" * 16
    assert jar.get(PathAddr(Transport.UDP, "198.18.2.2", 51821), 2.0) is None
    assert jar.get(a, 1.0 + T.COOKIE_LIFETIME) is None
    for i in range(100):
        jar.store(PathAddr(Transport.UDP, "198.18.2.2", i + 1), b"x" * 16, 5.0)
    assert len(jar) <= 16


def test_malformed_cookie_replies_are_ignored() -> None:
    r = creds("BBBBB")
    checker = CookieChecker(r.public_key, os.urandom)
    hs = init_to(r)
    good = checker.reply(hs.init_bytes, SRC, 0.0)
    other_hs = init_to(r, index=8, ts=3)
    cases = [
        (1, good[:-1], hs.mac1, r.public_key),  # truncated
        (2, good + b"\0", hs.mac1, r.public_key),  # trailing byte
        (3, good[:-1] + bytes([good[-1] ^ 1]), hs.mac1, r.public_key),  # tag flipped
        (4, good[:10] + bytes([good[10] ^ 1]) + good[11:], hs.mac1, r.public_key),  # nonce
        (5, good, other_hs.mac1, r.public_key),  # for another INIT (AD)
        (6, good, hs.mac1, creds("CCCCC").public_key),  # sealed by someone else
        (7, b"\x02" + good[1:], hs.mac1, r.public_key),  # wrong type
        (8, good[:1] + b"\x01" + good[2:], hs.mac1, r.public_key),  # reserved byte
        (9, b"", hs.mac1, r.public_key),
        (10, os.urandom(64), hs.mac1, r.public_key),
    ]
    for case, data, mac1, key in cases:
        assert open_cookie_reply(data, key, mac1) is None, case
    assert open_cookie_reply(good, r.public_key, hs.mac1) is not None  # positive control


def test_stamp_init_without_cookie_is_zero_mac2() -> None:
    body, mac1 = b"b" * 200, b"m" * 16
    assert stamp_init(body, mac1, None) == body + mac1 + bytes(16)
    assert stamp_init(body, mac1, b"c" * 16)[-16:] == KeyedMac(b"c" * 16).digest(body + mac1)


def _udp(host: str, port: int) -> PathAddr:
    return PathAddr(Transport.UDP, host, port)


def test_gate_asks_for_cookies_under_load_and_admits_mac2() -> None:
    r = creds("BBBBB")
    gate = InitGate(r.public_key, os.urandom)
    insider = creds("MMMMM")
    now = 100.0
    verdicts = []
    for i in range(400):  # offered far above UNDER_LOAD_RATE within 0.4 s, each from its own IP
        hs = InitiatorHandshake(insider, responder_key=r.public_key, local_index=i + 1,
                                timestamp=i + 1, random_bytes=os.urandom)
        assert gate.check_mac1(hs.init_bytes)
        verdicts.append(gate.admit(hs.init_bytes, _udp(f"198.18.{i // 200}.{i % 200 + 1}", 9),
                                   now + i / 1000))
    assert gate.under_load(now + 0.4)
    cookies = [v for v in verdicts if v.drop == "init_cookie_sent"]
    before_load = T.UNDER_LOAD_BURST + T.UNDER_LOAD_RATE * 0.4  # the meter's burst + refill
    assert len(cookies) >= 400 - before_load - 1 and all(v.reply for v in cookies)
    admitted = [v for v in verdicts if v.admit]
    assert len(admitted) <= T.INIT_BURST_PER_IDENTITY  # one claimed identity: its own bucket
    # a genuine initiator under load: cookie, then MAC2 from the same source is admitted
    genuine = creds("AAAAA", cert=b"G" * 300)
    hs = InitiatorHandshake(genuine, responder_key=r.public_key, local_index=99,
                            timestamp=1, random_bytes=os.urandom)
    src = _udp("198.18.9.9", 40000)
    v = gate.admit(hs.init_bytes, src, now + 0.5)
    assert v.drop == "init_cookie_sent" and v.reply is not None
    got = open_cookie_reply(v.reply, r.public_key, hs.mac1)
    assert got is not None
    assert gate.admit(hs.message(got[1]), src, now + 0.51).admit
    # the same cookie from a spoofed port of that host is not the host's cookie
    v2 = gate.admit(hs.message(got[1]), _udp("198.18.9.9", 40001), now + 0.52)
    assert v2.drop == "init_cookie_sent"
    # load ends UNDER_LOAD_AFTER after the last excess INIT
    assert not gate.under_load(now + 0.52 + T.UNDER_LOAD_AFTER + 0.01)


def test_gate_rate_limits_per_source_ip_not_per_port() -> None:
    r = creds("BBBBB")
    gate = InitGate(r.public_key, os.urandom)
    admitted = 0
    for i in range(60):  # distinct identities (certs), one host, a new source port each time
        hs = InitiatorHandshake(creds(cert=bytes([i]) * 300), responder_key=r.public_key,
                                local_index=i + 1, timestamp=1, random_bytes=os.urandom)
        admitted += gate.admit(hs.init_bytes, _udp("198.18.7.7", 1000 + i), 50.0).admit
    assert admitted == T.INIT_BURST_PER_SOURCE
