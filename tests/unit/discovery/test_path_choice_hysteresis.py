"""candidates.worth_moving: when a path of the same rank replaces the session's current one."""

from __future__ import annotations

from enclave.discovery import PathAddr, Transport
from enclave.discovery.candidates import RANK_DIRECT_UDP, PathChoice, choose_path, worth_moving

V4, V4B = PathAddr(Transport.UDP, "198.18.2.2", 51820), PathAddr(Transport.UDP, "198.18.2.3", 4500)
V6 = PathAddr(Transport.UDP, "2001:db8:2::20", 51820)


def ch(addr: PathAddr, rtt: float | None, at: float = 1.0) -> PathChoice:
    return PathChoice(addr, RANK_DIRECT_UDP, rtt, at)


def test_ipv6_within_the_slack_replaces_ipv4() -> None:
    assert choose_path([ch(V4, 0.0003), ch(V6, 0.0004)]) == V6
    assert worth_moving(ch(V4, 0.0003), ch(V6, 0.0004))
    assert worth_moving(ch(V4, None), ch(V6, None))


def test_jitter_within_the_slack_does_not_flap_between_two_ipv4_paths() -> None:
    # choose_path picks the lower RTT; moving for 10 us would flap on every probe
    assert choose_path([ch(V4, 0.00031), ch(V4B, 0.00030)]) == V4B
    assert not worth_moving(ch(V4, 0.00031), ch(V4B, 0.00030))
    assert not worth_moving(ch(V6, 0.0004), ch(V4, 0.0003))  # IPv6 kept among equals


def test_a_lower_rtt_beyond_the_slack_is_worth_moving() -> None:
    assert worth_moving(ch(V4, 0.030), ch(V4B, 0.010))
    assert worth_moving(ch(V6, 0.040), ch(V4, 0.010))
    assert not worth_moving(ch(V4, 0.010), ch(V6, 0.040))  # IPv6 far slower: stay
