"""Dual-stack pairs: which path a pair with both IPv4 and IPv6 chooses (candidates.choose_path).

    plat 198.18.0.11 / [2001:db8::11]   URLs https://198.18.0.11:8443 (first: the control
          |                             channel runs over IPv4) and https://[2001:db8::11]:8443
    sites (one host each)                IPv4                IPv6
      p, q                               port-restricted     firewall (stateful)
      s, t                               symmetric           firewall
      u, v                               symmetric           NAT66 (fd00:0:0:k::/64)

    pair    IPv4 alone     IPv6 alone    expected
    p - q   direct         direct        direct-udp over IPv6 (equal RTTs: IPv6 first)
    s - t   relay          direct        direct-udp over IPv6 (direct beats relayed)
    u - v   relay          direct        direct-udp over IPv6, to the peer's NAT66 mapping,
                                         which its agent learnt by reflecting over IPv6 to the
                                         platform's second URL (udp_alt)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from enclave.netlab.topology import V6Mode
from tests.support.lab import Agent, intents_both_ways, start_all
from tests.support.lab6 import endpoint_host, v6_platform_lab
from tests.support.peer_paths import connected_on, on_path
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

CONNECT_TIMEOUT = 30.0
P, S = NatType.PORT_RESTRICTED, NatType.SYMMETRIC
FW, N66 = V6Mode.FIREWALL, V6Mode.NAT66


@pytest.fixture(scope="module")
def dual(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Lab, dict[str, Agent]]]:
    topo = Topology(sites=[Site(name, nat=nat, ipv6=v6) for name, nat, v6 in (
        ("p", P, FW), ("q", P, FW), ("s", S, FW), ("t", S, FW), ("u", S, N66), ("v", S, N66))],
        public_hosts=["plat"])
    hosts = [f"{s}1" for s in "pqstuv"]
    with v6_platform_lab(topo, tmp_path_factory.mktemp("dual"), hosts,
                         urls=("v4", "v6")) as (lab, _plat, agents):
        start_all(agents.values())
        yield lab, agents


@pytest.mark.parametrize(("x", "y"), [("p1", "q1"), ("s1", "t1"), ("u1", "v1")],
                         ids=["both-direct", "v4-relay-only", "nat66"])
def test_dual_stack_pair_runs_direct_over_ipv6(dual: tuple[Lab, dict[str, Agent]],
                                               x: str, y: str) -> None:
    lab, agents = dual
    a, b = agents[x], agents[y]
    intents_both_ways(a, b)
    connected_on(a, b, "direct-udp", CONNECT_TIMEOUT)
    connected_on(b, a, "direct-udp", CONNECT_TIMEOUT)
    want = str(lab.host(y).public_ip6)

    def over_ipv6() -> dict[str, Any] | None:  # the IPv4 path may answer first: the pair
        p = on_path(a, b, "direct-udp")         # moves once the IPv6 one is confirmed too
        return p if p is not None and endpoint_host(p["endpoint"]) == want else None

    peer = wait_for(over_ipv6, timeout=CONNECT_TIMEOUT, interval=0.3,
                    what=f"{x} -> {y} direct-udp over IPv6")
    assert peer["endpoint"].startswith("["), peer  # an IPv6 endpoint is shown in brackets
    assert ping(a.host, b.overlay_ip, count=3) == 3


def test_dual_stack_agent_reflects_over_both_families(dual: tuple[Lab, dict[str, Agent]]
                                                      ) -> None:
    """Behind NAT66 the IPv6 mapping comes only from reflecting over IPv6 (the control channel
    runs over IPv4): the agent reports both families' mappings."""
    lab, agents = dual
    u = agents["u1"]
    mappings = u.status()["mappings"]
    assert any(m and m.startswith("198.18.") for m in mappings["udp"]), mappings
    router6 = lab.site("u").public_ip6
    assert any(m and m.startswith(f"[{router6}]:") for m in mappings["udp_alt"]), mappings
