"""DiscoveryState.udp_blocked: a finished check with no UDP reflection of either family (the
agent then relays over TLS at the introduction and skips the UDP relay)."""

from __future__ import annotations

import pytest

from enclave.agent.discovery import DiscoveryState

CHECKED = 1_800_000_000.0


@pytest.mark.parametrize(("state", "blocked"), [
    (DiscoveryState(), False),  # no check yet: nothing known
    (DiscoveryState(udp=[None, None], checked_at=CHECKED), True),
    (DiscoveryState(udp=[None, None], tcp=("198.18.1.1", 4000), checked_at=CHECKED), True),
    (DiscoveryState(udp=[("198.18.1.1", 51820), None], checked_at=CHECKED), False),
    (DiscoveryState(udp=[None, None], checked_at=CHECKED,
                    udp_alt=[("2001:db8::1", 51820), None]), False),  # IPv6 UDP gets out
    (DiscoveryState(udp=[], checked_at=CHECKED), False),  # the platform offered no reflector
])
def test_udp_blocked(state: DiscoveryState, blocked: bool) -> None:
    assert state.udp_blocked is blocked
