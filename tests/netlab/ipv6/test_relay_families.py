"""The platform's UDP relay over both families: an IPv4-only and an IPv6-only system, neither
able to punch (symmetric NAT, symmetric NAT66), meet at one dual-stack relay socket.

    plat 198.18.0.11 + [2001:db8::11], serving on [::] (API, reflector, relay :3479)
         URLs https://198.18.0.11:8443, https://[2001:db8::11]:8443 (the IPv6-only agent fails
         over to the second); ENCLAVE_PLATFORM_RELAY_PUBLIC="198.18.0.11,2001:db8::11"
          |
    +-----+----------------------+   +------------------------------+
    | w: IPv4 only, symmetric    |   | x: IPv6 only, NAT66 symmetric |
    |  w1 198.19.1.11            |   |  x1 fd00:0:0:2::11            |
    +----------------------------+   +------------------------------+

Each side is offered the relay at the address of its own family (hub: RelayService.public_for
by the control connection's family) and the pair is relayed across families: w1's datagrams
arrive over IPv4 and leave towards x1 over IPv6, and back. Both agents run with the default
overlay MTU, which is the one the relay needs over IPv6 (1398).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from enclave.netlab.topology import V6Mode
from tests.support.lab import Agent, intents_both_ways, start_all
from tests.support.lab6 import v6_platform_lab
from tests.support.peer_paths import connected_on
from tests.support.traffic import ping, tcp_transfer

pytestmark = [pytest.mark.netlab, pytest.mark.root]

CONNECT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def mixed(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Agent, Agent]]:
    topo = Topology(sites=[
        Site("w", nat=NatType.SYMMETRIC),
        Site("x", nat=NatType.NONE, ipv6=V6Mode.NAT66_SYMMETRIC, ipv4=False),
    ], public_hosts=["plat"])
    env = {"ENCLAVE_PLATFORM_RELAY_PUBLIC": "198.18.0.11,2001:db8::11"}
    with v6_platform_lab(topo, tmp_path_factory.mktemp("relayfam"), ["w1", "x1"],
                         urls=("v4", "v6"), plat_env=env) as (lab, _plat, agents):
        start_all(agents.values())  # default MTU 1398 = 1500 - 40 - 8 - 8 (relay) - 16 - 16 - 14
        yield lab, agents["w1"], agents["x1"]


def test_ipv4_only_and_ipv6_only_systems_meet_at_the_relay(mixed: tuple[Lab, Agent, Agent]
                                                           ) -> None:
    lab, w, x = mixed
    intents_both_ways(w, x)
    from_w = connected_on(w, x, "relay-udp", CONNECT_TIMEOUT)
    from_x = connected_on(x, w, "relay-udp", CONNECT_TIMEOUT)
    plat = lab.public_host("plat")
    assert str(from_w["relay"]).startswith(f"{plat.ip}:"), from_w
    assert str(from_x["relay"]).startswith(f"[{plat.ip6}]:"), from_x
    assert ping(w.host, x.overlay_ip, count=3) == 3
    sent, got = tcp_transfer(x.host, w.host, w.overlay_ip, size=1 << 20)
    assert sent == got
