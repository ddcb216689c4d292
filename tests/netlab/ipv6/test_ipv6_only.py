"""IPv6-only pairs: both sites without IPv4, the platform reached over IPv6 only.

    plat [2001:db8::11]:8443  (URL https://[2001:db8::11]:8443, serving on [::])
          |  2001:db8::/32 "internet" (no IPv4 on either site)
    +-----+---------------+   +-----------------------+
    | f: IPv6 firewall    |   | g: IPv6 firewall      |   stateful: unsolicited inbound dropped,
    |  f1 2001:db8:2:1::11|   |  g1 2001:db8:2:2::11  |   so the pair must punch
    +---------------------+   +-----------------------+
    | n: NAT66 (ULA)      |   | m: NAT66 (ULA)        |   fd00:0:0:k::/64 behind masquerade:
    |  n1 fd00:0:0:3::11  |   |  m1 fd00:0:0:4::11    |   the reflected IPv6 mapping is the path
    +---------------------+   +-----------------------+
    | x: NAT66 symmetric  |   | y: NAT66 symmetric    |   a new port per destination on both
    |  x1 fd00:0:0:5::11  |   |  y1 fd00:0:0:6::11    |   sides: no direct path, the platform
    +---------------------+   +-----------------------+   relay at [2001:db8::11] carries it

The firewall and NAT66 pairs connect on a direct UDP path over IPv6 (the endpoint is an IPv6
address: no IPv4 exists); the symmetric NAT66 pair is relayed by the platform's UDP relay over
IPv6 (the default overlay MTU leaves room for the relay's header over IPv6). Each carries
ICMP echo and a TCP transfer over the overlay; the agents' reflected mappings are IPv6 (the
reflector answered over IPv6).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from enclave.netlab.topology import V6Mode
from tests.support.lab import Agent, intents_both_ways, start_all
from tests.support.lab6 import endpoint_host, v6_platform_lab
from tests.support.peer_paths import connected_on
from tests.support.traffic import ping, tcp_transfer

pytestmark = [pytest.mark.netlab, pytest.mark.root]

CONNECT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def v6lab(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, dict[str, Agent]]]:
    topo = Topology(sites=[
        Site("f", nat=NatType.NONE, ipv6=V6Mode.FIREWALL, ipv4=False),
        Site("g", nat=NatType.NONE, ipv6=V6Mode.FIREWALL, ipv4=False),
        Site("n", nat=NatType.NONE, ipv6=V6Mode.NAT66, ipv4=False),
        Site("m", nat=NatType.NONE, ipv6=V6Mode.NAT66, ipv4=False),
        Site("x", nat=NatType.NONE, ipv6=V6Mode.NAT66_SYMMETRIC, ipv4=False),
        Site("y", nat=NatType.NONE, ipv6=V6Mode.NAT66_SYMMETRIC, ipv4=False),
    ], public_hosts=["plat"])
    with v6_platform_lab(topo, tmp_path_factory.mktemp("v6only"),
                         ["f1", "g1", "n1", "m1", "x1", "y1"]) as (lab, _plat, agents):
        start_all(agents.values())  # default MTU (1398): fits the UDP relay over IPv6
        yield lab, agents


@pytest.mark.parametrize(("x", "y"), [("f1", "g1"), ("n1", "m1")], ids=["firewall", "nat66"])
def test_ipv6_only_pair_connects_directly_and_carries_traffic(
        v6lab: tuple[Lab, dict[str, Agent]], x: str, y: str) -> None:
    lab, agents = v6lab
    a, b = agents[x], agents[y]
    assert lab.host(x).run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout == ""
    intents_both_ways(a, b)
    peer = connected_on(a, b, "direct-udp", CONNECT_TIMEOUT)
    connected_on(b, a, "direct-udp", CONNECT_TIMEOUT)
    host = endpoint_host(str(peer["endpoint"]))
    want = lab.host(y).public_ip6
    assert host == str(want), f"{x} reaches {y} at {peer['endpoint']}, expected [{want}]"
    mappings = a.status().get("mappings") or {}
    udp = [m for m in mappings.get("udp", []) if m]
    assert udp and all(m.startswith("[2001:db8:") for m in udp), mappings
    assert ping(a.host, b.overlay_ip, count=3) == 3
    sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=2 << 20)
    assert sent == got


def test_ipv6_only_pair_is_relayed_over_ipv6(v6lab: tuple[Lab, dict[str, Agent]]) -> None:
    lab, agents = v6lab
    a, b = agents["x1"], agents["y1"]
    intents_both_ways(a, b)
    peer = connected_on(a, b, "relay-udp", CONNECT_TIMEOUT)
    connected_on(b, a, "relay-udp", CONNECT_TIMEOUT)
    plat6 = lab.public_host("plat").ip6
    assert peer["relay"] is not None and peer["relay"].startswith(f"[{plat6}]:"), peer
    assert ping(a.host, b.overlay_ip, count=3) == 3
    sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=1 << 20)
    assert sent == got
