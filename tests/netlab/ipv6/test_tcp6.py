"""TCP over IPv6: an IPv6-only pair whose routers drop all UDP (both stateful IPv6 firewalls)
gets a direct TCP path over IPv6 by simultaneous open through both firewalls.

    plat [2001:db8::11] (HTTPS API, relay over TLS)
    +--------------------------------+   +--------------------------------+
    | h: IPv6-only, firewall, no UDP |   | k: IPv6-only, firewall, no UDP |
    |  h1 2001:db8:2:1::11           |   |  k1 2001:db8:2:2::11           |
    +--------------------------------+   +--------------------------------+

The agents' TCP data ports are dual-stack listeners; their global IPv6 addresses are TCP
candidates; the session comes up on direct-tcp to the peer's IPv6 address (relay-tls, the only
other way, ranks below it) and carries ICMP echo and a TCP transfer.
"""

from __future__ import annotations

import pytest

from enclave.netlab import NatType, Site, Topology
from enclave.netlab.topology import V6Mode
from tests.support.lab import intents_both_ways, start_all
from tests.support.lab6 import v6_platform_lab
from tests.support.peer_paths import connected_on
from tests.support.traffic import ping, tcp_transfer

pytestmark = [pytest.mark.netlab, pytest.mark.root]

CONNECT_TIMEOUT = 45.0


def test_ipv6_only_pair_without_udp_runs_direct_tcp(netlab_required: None,
                                                   tmp_path_factory: pytest.TempPathFactory
                                                   ) -> None:
    topo = Topology(sites=[
        Site(s, nat=NatType.NONE, ipv6=V6Mode.FIREWALL, ipv4=False, block_udp=True)
        for s in ("h", "k")], public_hosts=["plat"])
    with v6_platform_lab(topo, tmp_path_factory.mktemp("tcp6"), ["h1", "k1"]) as (lab, _p, ag):
        a, b = ag["h1"], ag["k1"]
        start_all([a, b])
        intents_both_ways(a, b)
        peer = connected_on(a, b, "direct-tcp", CONNECT_TIMEOUT)
        connected_on(b, a, "direct-tcp", CONNECT_TIMEOUT)
        assert peer["endpoint"] == f"[{lab.host('k1').ip6}]:{peer['endpoint'].rsplit(':', 1)[1]}"
        assert ping(a.host, b.overlay_ip, count=3) == 3
        sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=2 << 20)
        assert sent == got
