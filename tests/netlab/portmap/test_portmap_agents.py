"""Real agents and a real platform: a router with miniupnpd turns a symmetric-symmetric pair,
which otherwise needs the relay, into a direct one.

    m1  symmetric NAT + miniupnpd   agent maps its data port  ---- direct-udp ----  s1
    n1  symmetric NAT + miniupnpd   agent --no-portmap         ---- relay-udp  ----  s2
                                                      s1, s2: one symmetric NAT, no port mapping

m1 offers its mapped address (PUBLIC, nat "none"); s1 reaches it without punching, so the pair
connects directly and carries traffic. n1's router could map too, but n1 does not ask: that pair
stays relayed, as every symmetric-symmetric pair does. When m1 stops, its mapping is deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology, upnp
from tests.support.lab import Agent, intents_both_ways, platform_lab
from tests.support.peer_paths import connected_on
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which(upnp.MINIUPNPD) is None or shutil.which(upnp.STUND) is None,
                       reason="miniupnpd / stund not installed (install.sh test installs them)"),
]
PORT = 51820  # every agent's data port (the default)

World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("m", nat=NatType.SYMMETRIC, upnp=True),
                           Site("n", nat=NatType.SYMMETRIC, upnp=True),
                           Site("s", nat=NatType.SYMMETRIC, hosts=2)],
                    public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("portmap"), ["m1", "n1", "s1", "s2"]) as w:
        ag = w[2]
        for name in ("m1", "s1", "s2"):
            ag[name].start()
        ag["n1"].start("--no-portmap")
        for a in ag.values():
            a.wait_up()
        yield w


def _mapping(a: Agent) -> dict[str, object] | None:
    pm = a.status().get("portmap")
    return pm.get("mapping") if pm else None


def test_mapped_candidate_makes_a_symmetric_pair_direct(world: World) -> None:
    lab, _plat, ag = world
    m, s = ag["m1"], ag["s1"]
    mapping = wait_for(lambda: _mapping(m), timeout=30, interval=0.5,
                       what="m1's router granted a mapping")
    ext = str(mapping["external"])
    assert ext.startswith(f"{lab.site('m').public_ip}:")
    router = lab.site("m").router_netns
    assert f"dnat ip to {m.host.ip}:{PORT}" in upnp.rules(router), upnp.log_text(lab.prefix, "m")
    intents_both_ways(m, s)
    # the symmetric-symmetric pair goes direct, s1 sending to m1's mapped address
    got = connected_on(s, m, "direct-udp", 40)
    assert got["endpoint"] == ext, got
    connected_on(m, s, "direct-udp", 10)
    assert ping(s.host, m.overlay_ip, count=3)


def test_without_port_mapping_the_same_pair_relays(world: World) -> None:
    lab, _plat, ag = world
    n, s = ag["n1"], ag["s2"]
    assert n.status()["portmap"] is None  # --no-portmap
    assert f"dnat ip to {n.host.ip}" not in upnp.rules(lab.site("n").router_netns)
    intents_both_ways(n, s)
    connected_on(s, n, "relay-udp", 40)
    assert ping(s.host, n.overlay_ip, count=3)


def test_the_mapping_is_deleted_when_the_agent_stops(world: World) -> None:
    lab, _plat, ag = world
    m = ag["m1"]
    wait_for(lambda: _mapping(m), timeout=30, interval=0.5, what="m1's mapping")
    router = lab.site("m").router_netns
    assert f"dnat ip to {m.host.ip}:{PORT}" in upnp.rules(router)
    assert m.down() == 0
    assert f"dnat ip to {m.host.ip}:{PORT}" not in upnp.rules(router), (
        m.log()[-3000:], upnp.log_text(lab.prefix, "m")[-3000:])
    assert "portmap: released" in m.log()
