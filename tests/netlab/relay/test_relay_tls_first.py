"""A site that drops UDP goes to the relay over TLS at the introduction, never to the UDP relay.

    a1  symmetric NAT, UDP blocked ---- relay-tls ----  b1  symmetric NAT, UDP blocked
         (site a's router counts the UDP it is asked to forward to the platform's UDP relay)

Discovery finds no UDP reflection (status udp_blocked); an introduction then registers the
relay over TLS at once: the session's first path is relay-tls, and not one datagram went to the
UDP relay (before, each introduction sent UDP relay registrations into the block and waited
RELAY_TLS_AFTER for them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology, netns
from enclave.netlab.nat import LAN
from enclave.platform.relay import DEFAULT_PORT as RELAY_PORT
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import connected_on
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
COUNT_TABLE = "enclave_test_relay_count"

World = tuple[Lab, Platform, dict[str, Agent]]


def count_rules() -> str:
    """nft: count what site a's LAN asks the router to forward to UDP port RELAY_PORT (before
    the UDP block, whose priority is filter - 10, drops it)."""
    return (f"table inet {COUNT_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter - 20; policy accept;\n"
            f"    iifname \"{LAN}\" udp dport {RELAY_PORT} counter\n"
            "  }\n"
            "}\n")


def relay_udp_packets(router_netns: str) -> int:
    out = netns.run(netns.exec_argv(router_netns, ["nft", "-j", "list", "table", "inet",
                                                   COUNT_TABLE])).stdout
    return sum(expr["counter"]["packets"] for item in json.loads(out)["nftables"]
               if "rule" in item for expr in item["rule"]["expr"] if "counter" in expr)


def blocked_seen(agent: Agent) -> Callable[[], bool | None]:
    return lambda: bool(agent.status()["udp_blocked"]) or None


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("a", nat=NatType.SYMMETRIC, block_udp=True),
                           Site("b", nat=NatType.SYMMETRIC, block_udp=True)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("tlsfirst"), ["a1", "b1"]) as w:
        netns.run(netns.exec_argv(w[0].site("a").router_netns, ["nft", "-f", "-"]),
                  input=count_rules())
        start_all(w[2].values())
        yield w


def test_udp_blocked_agent_relays_over_tls_without_trying_udp(world: World) -> None:
    lab, _plat, ag = world
    a, b = ag["a1"], ag["b1"]
    for agent in (a, b):  # discovery's first check is over: no UDP reflection came back
        wait_for(blocked_seen(agent), timeout=30, interval=0.3,
                 what=f"{agent.host.name} finds UDP blocked")
    router = lab.site("a").router_netns
    assert relay_udp_packets(router) == 0  # the counter works on a clean slate
    intents_both_ways(a, b)
    pa = connected_on(a, b, "relay-tls", 30)
    connected_on(b, a, "relay-tls", 10)
    # the first frame came over the relay over TLS: no path before it, no UDP relay channel
    assert pa["path_changes"] == 0, pa
    assert pa["relay_tls_registered"] and not pa["relay_registered"], pa
    assert ping(a.host, b.overlay_ip, count=3)
    assert relay_udp_packets(router) == 0, "a1 sent UDP relay registrations into the block"
    assert "UDP blocked: relay over TLS first" in a.log()
