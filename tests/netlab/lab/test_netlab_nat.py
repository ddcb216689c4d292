"""Every NAT type behaves as named: real UDP (and TCP) probes to two reflectors on the internet.

One lab for the module (built once, ~0.3 s):

    r1, r2 (public reflectors) -- inet -- open  (none)            open1
                                       -- full  (full-cone)       full1 full2
                                       -- rest  (restricted)      rest1 rest2
                                       -- port  (port-restricted) port1 port2
                                       -- sym   (symmetric)       sym1
                                       -- fw    (firewall)        fw1
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from enclave.netlab.probe import REFLECT_PORT, probe_tcp, probe_udp, udp_reachable

pytestmark = [pytest.mark.netlab, pytest.mark.root]

SITES = {
    NatType.NONE: ("open", 1),
    NatType.FULL_CONE: ("full", 2),
    NatType.RESTRICTED: ("rest", 2),
    NatType.PORT_RESTRICTED: ("port", 2),
    NatType.SYMMETRIC: ("sym", 1),
    NatType.FIREWALL: ("fw", 1),
}


@pytest.fixture(scope="module")
def lab(netlab_required: None) -> Iterator[Lab]:
    topo = Topology(
        sites=[Site(name, nat=nat, hosts=n) for nat, (name, n) in SITES.items()],
        public_hosts=["r1", "r2"],
    )
    with Lab(topo) as lab:
        yield lab


def host_of(lab: Lab, nat: NatType, i: int = 1) -> Host:
    return lab.host(f"{SITES[nat][0]}{i}")


# (public address is the NAT's, same public port for both reflectors,
#  unsolicited in before any outbound, from contacted address other port, from another address)
EXPECTED = {
    NatType.NONE: (False, True, True, True, True),
    NatType.FULL_CONE: (True, True, False, True, True),
    NatType.RESTRICTED: (True, True, False, True, False),
    NatType.PORT_RESTRICTED: (True, True, False, False, False),
    NatType.SYMMETRIC: (True, False, False, False, False),
    NatType.FIREWALL: (False, True, False, False, False),
}


@pytest.mark.parametrize("nat", list(NatType), ids=[n.value for n in NatType])
def test_udp_behaves_as_named(lab: Lab, nat: NatType) -> None:
    host = host_of(lab, nat)
    obs = probe_udp(host, lab.public_host("r1"), lab.public_host("r2"))
    translated, same_port, unsolicited, other_port, other_addr = EXPECTED[nat]
    site = lab.site(SITES[nat][0])
    if translated:
        assert obs.mapped_r1[0] == str(site.public_ip) == str(host.public_ip)
        assert obs.mapped_r2[0] == str(site.public_ip)
    else:
        assert obs.mapped_r1 == obs.local == (str(host.ip), obs.local[1])
        assert host.public_ip == host.ip
    assert (obs.mapped_r1[1] == obs.mapped_r2[1]) is same_port
    if same_port and translated and nat is not NatType.SYMMETRIC:
        assert obs.mapped_r1[1] == obs.local[1]  # port preserved when free
    assert obs.reply_in, "a reply from the contacted address and port must always pass"
    assert obs.unsolicited_in is unsolicited
    assert obs.same_addr_other_port_in is other_port
    assert obs.other_addr_in is other_addr


@pytest.mark.parametrize(
    "nat",
    [NatType.PORT_RESTRICTED, NatType.SYMMETRIC, NatType.FIREWALL, NatType.NONE],
    ids=lambda n: n.value,
)
def test_tcp(lab: Lab, nat: NatType) -> None:
    host = host_of(lab, nat)
    obs = probe_tcp(host, lab.public_host("r1"), lab.public_host("r2"))
    assert obs.mapped_r1[0] == str(host.public_ip)
    if nat is NatType.SYMMETRIC:
        assert not obs.endpoint_independent_mapping
    else:
        assert obs.endpoint_independent_mapping
        assert obs.mapped_r1[1] == obs.local_port
    open_inbound = nat is NatType.NONE
    assert obs.unsolicited_in is open_inbound
    assert obs.same_addr_other_port_in is open_inbound


@pytest.mark.parametrize("nat", [NatType.FULL_CONE, NatType.RESTRICTED], ids=lambda n: n.value)
def test_cone_mapping_stays_per_endpoint_when_ports_collide(lab: Lab, nat: NatType) -> None:
    """Two hosts behind one cone NAT bind the same port: the second gets another public port,
    keeps it for every destination, and inbound to each public port reaches its own host."""
    h1, h2 = host_of(lab, nat, 1), host_of(lab, nat, 2)
    r1, r2 = lab.public_host("r1"), lab.public_host("r2")
    socks = []
    try:
        rx1, rx2 = r1.socket(), r2.socket()
        socks += [rx1, rx2]
        rx1.bind(("0.0.0.0", REFLECT_PORT + 10))
        rx2.bind(("0.0.0.0", REFLECT_PORT + 10))
        for s in (rx1, rx2):
            s.settimeout(2)
        c1, c2 = h1.socket(), h2.socket()
        socks += [c1, c2]
        c1.bind(("0.0.0.0", 0))
        port = c1.getsockname()[1]
        c2.bind(("0.0.0.0", port))
        c1.settimeout(2)
        c2.settimeout(2)
        mapped: dict[str, list[tuple[str, int]]] = {"c1": [], "c2": []}
        for rx, dst in ((rx1, r1), (rx2, r2)):
            for name, c in (("c1", c1), ("c2", c2)):
                c.sendto(name.encode(), (str(dst.ip), REFLECT_PORT + 10))
                data, addr = rx.recvfrom(100)
                assert data == name.encode()
                mapped[name].append(addr)
        assert mapped["c1"][0] == mapped["c1"][1] == (str(h1.public_ip), port)
        assert mapped["c2"][0] == mapped["c2"][1]  # endpoint-independent for c2 too
        assert mapped["c2"][0][1] != port
        # r1 reaches each inside host at its own public port, from a port it never used
        for name, c in (("c1", c1), ("c2", c2)):
            poke = r1.socket()
            socks.append(poke)
            poke.bind(("0.0.0.0", 0))
            poke.sendto(b"poke-" + name.encode(), mapped[name][0])
            data, addr = c.recvfrom(100)
            assert data == b"poke-" + name.encode()
            assert addr[0] == str(r1.ip)
    finally:
        for s in socks:
            s.close()


def test_same_lan_hosts_talk_directly(lab: Lab) -> None:
    for nat in (NatType.PORT_RESTRICTED, NatType.FULL_CONE):
        a, b = host_of(lab, nat, 1), host_of(lab, nat, 2)
        seen = udp_reachable(a, b)
        assert seen is not None and seen[0] == str(a.ip), "LAN traffic must not be translated"


def test_nated_lan_is_not_routable_from_the_internet(lab: Lab) -> None:
    r1 = lab.public_host("r1")
    assert udp_reachable(r1, host_of(lab, NatType.PORT_RESTRICTED)) is None
    # while the routed (no NAT) site's LAN is, and shows the sender's real address
    seen = udp_reachable(r1, host_of(lab, NatType.NONE))
    assert seen is not None and seen[0] == str(r1.ip)


def test_sites_reach_each_other_through_the_internet(lab: Lab) -> None:
    src = host_of(lab, NatType.SYMMETRIC)
    seen = udp_reachable(src, host_of(lab, NatType.NONE))
    assert seen is not None and seen[0] == str(src.public_ip)
