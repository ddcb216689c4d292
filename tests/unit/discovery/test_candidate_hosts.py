"""Candidates are addresses, never names: the host check, the JSON filter, the punch bound."""

from __future__ import annotations

import random

import pytest

from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
    check_candidate_host,
)
from enclave.discovery.introduction import (
    Introduction,
    IntroductionError,
    candidates_from_json,
)
from enclave.discovery.punch import MAX_PUNCH_TARGETS, PunchSchedule


@pytest.mark.parametrize(
    ("case", "host", "loopback", "canonical"),
    [
        (1, "198.18.0.2", False, "198.18.0.2"),
        (2, "10.1.2.3", False, "10.1.2.3"),
        (3, "2001:db8::0:1", False, "2001:db8::1"),  # canonical text
        (4, "127.0.0.1", True, "127.0.0.1"),  # loopback only when both ends are local
        (5, "::1", True, "::1"),
    ],
)
def test_accepted_hosts(case: int, host: str, loopback: bool, canonical: str) -> None:
    assert check_candidate_host(host, loopback=loopback) == canonical


@pytest.mark.parametrize(
    ("case", "host"),
    [
        (1, "evil.example"),  # a name: never resolved
        (2, "localhost"),
        (3, ""),
        (4, "127.0.0.1"),  # loopback
        (5, "::1"),
        (6, "0.0.0.0"),  # unspecified
        (7, "::"),
        (8, "224.0.0.1"),  # multicast
        (9, "ff02::1"),
        (10, "255.255.255.255"),  # broadcast
        (11, "240.0.0.1"),  # reserved
        (12, "169.254.1.1"),  # link-local
        (13, "fe80::1"),
        (14, "fe80::1%eth0"),  # scoped
        (15, "::ffff:127.0.0.1"),  # IPv4-mapped
        (16, "010.1.1.1"),  # ambiguous octal-looking form
        (17, "198.18.0.2:51820"),  # port glued on
        (18, "1" * 300),
    ],
)
def test_refused_hosts(case: int, host: str) -> None:
    with pytest.raises(ValueError):
        check_candidate_host(host)


def _cand(host: str, port: int = 51820, kind: str = "public") -> dict[str, object]:
    return {"transport": "udp", "host": host, "port": port, "kind": kind, "nat": "none"}


def test_from_json_drops_names_and_keeps_addresses() -> None:
    raw = [_cand("evil.example"), _cand("198.18.0.2"), _cand("127.0.0.1"), _cand("10.0.0.1")]
    kept, dropped = candidates_from_json(raw, limit=32, loopback=False)
    assert [c.addr.host for c in kept] == ["198.18.0.2", "10.0.0.1"]
    assert dropped == 2
    kept, dropped = candidates_from_json(raw, limit=32, loopback=True)
    assert [c.addr.host for c in kept] == ["198.18.0.2", "127.0.0.1", "10.0.0.1"]
    assert dropped == 1


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        (1, "nope"),
        (2, [_cand("198.18.0.2")] * 33),  # over the limit
        (3, [_cand("198.18.0.2", port=0)]),
        (4, [_cand("198.18.0.2", port=True)]),
        (5, [_cand("198.18.0.2", kind="?")]),
        (6, [{"transport": "udp", "host": 5, "port": 1, "kind": "public"}]),
    ],
)
def test_from_json_malformed(case: int, raw: object) -> None:
    with pytest.raises(IntroductionError):
        candidates_from_json(raw, limit=32, loopback=False)


def _intro_json(**extra: object) -> dict[str, object]:
    intro = Introduction(
        peer="V88RY", cert_der=b"\x30\x82der",
        candidates=(Candidate(PathAddr(Transport.UDP, "198.19.1.2", 51820),
                              CandidateKind.PRIVATE),),
        nat=NatBehaviour.NONE, punch_at=1764193000.25,
        relay=PathAddr(Transport.RELAY, "198.18.0.2", 3479))
    return {**intro.to_json(), **extra}


def test_introduction_drops_hostname_candidates() -> None:
    d = _intro_json()
    d["candidates"] = [_cand("evil.example"), *d["candidates"]]  # type: ignore[misc]
    intro = Introduction.from_json(d)
    assert [c.addr.host for c in intro.candidates] == ["198.19.1.2"]


def test_introduction_with_a_relay_name_is_malformed() -> None:
    with pytest.raises(IntroductionError):
        Introduction.from_json(_intro_json(
            relay={"transport": "relay", "host": "relay.example", "port": 3479}))


def test_punch_schedule_probes_a_bounded_number_of_candidates() -> None:
    many = [Candidate(PathAddr(Transport.UDP, f"198.18.{i // 250}.{i % 250 + 1}", 51820),
                      CandidateKind.PUBLIC) for i in range(200)]
    lan = Candidate(PathAddr(Transport.UDP, "10.0.0.1", 51820), CandidateKind.PRIVATE)
    s = PunchSchedule([*many, lan], 0.0, random.Random(1))
    got = s.due(0.0)
    assert len(got) == MAX_PUNCH_TARGETS
    assert got[0] == lan  # the best ranked are kept
