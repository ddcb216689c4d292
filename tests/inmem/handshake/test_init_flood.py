"""Handshakes strangers cannot starve (issue 12, item 2), in memory on a simulated clock.

    200 genuine peers G001..G200 --INIT (MAC1 with B's key)--> B <-- 5,000 junk INIT-shaped
                                                                     datagrams per second from
                                                                     rotating sources

The audit's probe (AUDIT-1eeaf5c finding 1): with the old INIT (no MAC1, per-(ip, port)
buckets, shared global bucket) only 8 of 200 genuine INITs got past the limiter at 5,000 pps.
Here every genuine peer gets its session, junk costs one MAC check each and no rate-limit token.

Under load from valid-MAC1 INITs (an introduced insider's, from spoofed sources), B answers
with cookie replies instead of any certificate or signature work; genuine peers retry with MAC2
from their real address and get in.
"""

from __future__ import annotations

import os
import random

from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from enclave.proto.handshake import InitiatorHandshake
from enclave.proto.wire import MSG_COOKIE_REPLY, MSG_HANDSHAKE_RESPONSE
from tests.support.junk import init_shaped
from tests.support.pki import Pki
from tests.support.router import Host, Router, make_host, sim_pki, udp

B = "BBBBB"
ADDR_B = udp("198.18.2.2")
TICK = 0.01  # junk is injected in batches, one per simulated 10 ms


class CountingValidator:
    """The real certificate check (Pki.validate), counting how often B spends it."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.calls = 0

    def __call__(self, der: bytes):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.pki.validate(der)


def rotating_source(rng: random.Random) -> PathAddr:
    return PathAddr(Transport.UDP, f"198.19.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    rng.randrange(1024, 65536))


def flood(r: Router, rng: random.Random, make: object, per_second: int, seconds: float,
          dst: PathAddr = ADDR_B) -> int:
    """Queue `per_second` datagrams per second for `seconds` (batches every TICK)."""
    assert callable(make)
    per_tick = int(per_second * TICK)
    n = 0
    for k in range(int(seconds / TICK)):
        for _ in range(per_tick):
            data, src = make()
            r.inject(data, src, dst, delay=k * TICK)
            n += 1
    return n


def world(n_genuine: int, pki: Pki) -> tuple[Router, Host, list[Host], CountingValidator]:
    r = Router(seed=3)
    names = [f"G{i:04d}" for i in range(n_genuine)]
    validator = CountingValidator(pki)
    b = r.add(make_host(pki, B, [ADDR_B], intents={*names, "MMMMM"}, seed=2, validate=validator))
    gs = [r.add(make_host(pki, n, [udp(f"198.18.{10 + i // 200}.{i % 200 + 1}")],
                          intents={B}, seed=10 + i)) for i, n in enumerate(names)]
    return r, b, gs, validator


def connected(b: Host, g: Host) -> bool:
    return b.node.session(g.name) is not None and g.node.session(B) is not None


def test_junk_flood_from_rotating_sources_starves_no_genuine_handshake() -> None:
    """The audit's probe: B's Node driven with 5,000 junk INIT-shaped datagrams per second from
    rotating sources plus 200 genuine INITs (200 introduced systems, their real INITs from
    their own addresses, spread over 10 s); each genuine handshake is completed by hand
    (RESPONSE -> CONFIRM) so B ends up with 200 sessions."""
    pki = sim_pki()
    r, b, _gs, validator = world(0, pki)
    names = [f"G{i:04d}" for i in range(200)]
    b.intents.update(names)
    rng = random.Random(1)
    junk = flood(r, rng, lambda: (init_shaped(rng), rotating_source(rng)), 5000, 10.0)
    genuine: dict[PathAddr, InitiatorHandshake] = {}
    for i, name in enumerate(names):
        g = make_host(pki, name, [], intents={B}, seed=10 + i)
        hs = InitiatorHandshake(g.node.creds, responder_key=b.public_key, local_index=i + 1,
                                timestamp=10**18 + i, random_bytes=os.urandom)
        src = udp(f"198.18.{10 + i // 200}.{i % 200 + 1}", 40000 + i)
        genuine[src] = hs
        r.inject(hs.init_bytes, src, ADDR_B, delay=i * 0.05)
    answered: dict[PathAddr, bytes] = {}
    to_strangers = 0
    for _ in range(21):  # every half second: confirm the handshakes B answered meanwhile
        r.run(0.5)
        for _t, sender, dst, data in r.log:
            if sender == B and data[0] == MSG_HANDSHAKE_RESPONSE and dst not in answered:
                answered[dst] = data
                got = genuine[dst].receive_response(data, pki.validate, lambda n: n == B)
                assert got is not None
                r.inject(got[0], dst, ADDR_B)
        to_strangers += sum(1 for x in r.log if x[1] == B and x[2].host.startswith("198.19."))
        r.log.clear()
    assert len(answered) == 200, f"only {len(answered)} of 200 genuine INITs were answered"
    assert all(b.node.session(n) is not None for n in names)
    drops = b.node.counters()
    assert drops.get("init_bad_mac1") == junk  # every junk datagram: dropped at the MAC check
    assert "init_rate_limited" not in drops and "init_cookie_sent" not in drops
    assert validator.calls == 200  # the junk cost no certificate check
    assert to_strangers == 0  # not one datagram back to a junk source


def test_valid_mac1_flood_from_spoofed_sources_gets_cookies_not_work() -> None:
    pki = sim_pki()
    r, b, gs, validator = world(20, pki)
    # an introduced insider M knows B's certificate: its INITs carry a valid MAC1
    m = make_host(pki, "MMMMM", [udp("198.18.3.3")], intents={B}, seed=5)
    inits = [
        InitiatorHandshake(m.node.creds, responder_key=b.public_key, local_index=i + 1,
                           timestamp=10**18 + i, random_bytes=os.urandom).init_bytes
        for i in range(500)
    ]
    rng = random.Random(2)
    spoofed = flood(r, rng, lambda: (rng.choice(inits), rotating_source(rng)), 5000, 6.0)
    r.run(1.0)  # the flood is on: B is under load
    calls_at_load = validator.calls
    cookies_at_load = b.node.counters().get("init_cookie_sent", 0)
    assert cookies_at_load > 0
    t0 = r.now
    for i, g in enumerate(gs):  # genuine peers connect during the flood
        g.node.connect(B, [Candidate(ADDR_B, CandidateKind.PUBLIC)], r.now,
                       punch_at=t0 + i * 0.1, peer_key=b.public_key)
    r.run(5.0)
    assert all(connected(b, g) for g in gs)
    drops = b.node.counters()
    # after the first second the spoofed INITs cost no certificate or signature check at all:
    # the only validations are the genuine peers' (one each)
    assert validator.calls - calls_at_load == len(gs)
    assert calls_at_load <= 20  # before load: bounded by the insider's identity bucket
    # every spoofed INIT under load was answered with a cookie (to an address that never
    # answers with MAC2), none with a RESPONSE
    cookie_replies = [x for x in r.log if x[1] == B and x[3][0] == MSG_COOKIE_REPLY]
    assert drops["init_cookie_sent"] == len(cookie_replies) >= spoofed * 0.9
    responses_to_spoofed = [x for x in r.log if x[1] == B and x[3][0] == MSG_HANDSHAKE_RESPONSE
                            and x[2].host.startswith("198.19.")]
    assert len(responses_to_spoofed) <= calls_at_load
    # genuine peers needed a cookie and got in with MAC2
    assert sum(1 for x in cookie_replies if not x[2].host.startswith("198.19.")) >= len(gs)
    assert all(len(g.node.counters()) == 0 for g in gs)
