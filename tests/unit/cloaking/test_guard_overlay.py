"""The guard table's overlay rule (enclave.policy.guard.Overlay): the overlay IP takes packets
only from the TAP and loopback (a LAN neighbour routing the overlay range to the host reaches
nothing), and PortGuard renders it into every version of the table."""

from __future__ import annotations

import ipaddress

import pytest

from enclave.agent.guard import PortGuard
from enclave.policy.guard import Overlay, parse_hosts, ruleset

OVERLAY = Overlay("enclave0", ipaddress.IPv4Address("100.64.12.7"))
RULE = 'ip daddr 100.64.12.7 iifname != { "lo", "enclave0" } counter drop'


def test_the_overlay_rule_follows_the_port_rules() -> None:
    lines = [x.strip() for x in ruleset(51820, parse_hosts(["198.18.1.1"]), OVERLAY).splitlines()]
    assert lines.index(RULE) == lines.index("tcp dport 51820 counter drop") + 1
    assert RULE not in ruleset(51820, set())  # no TAP (--no-tap): no rule


@pytest.mark.parametrize("name", ["", "a" * 16, 'en"0', "en 0", "en}0"])
def test_an_interface_name_nft_could_misread_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        Overlay(name, ipaddress.IPv4Address("100.64.0.1"))


def test_port_guard_keeps_the_rule_through_introductions() -> None:
    applied: list[str] = []
    guard = PortGuard(lambda text: applied.append(text) is None, overlay=OVERLAY)
    assert guard.install(51820)
    guard.allow("3ZM8D", ["198.18.2.1"])
    guard.forget("3ZM8D")
    assert len(applied) == 3 and all(RULE in text for text in applied)
