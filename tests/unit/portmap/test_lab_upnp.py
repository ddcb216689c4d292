"""netlab's port-mapping router as data: which sites may run it, that the topology keeps the
option, and what miniupnpd is told (secure mode, the LAN only, STUN on the router itself, its
nftables chains)."""

from __future__ import annotations

import ipaddress

import pytest

from enclave.netlab import NatType, Site, Topology, upnp
from enclave.netlab.topology import V6Mode


@pytest.mark.parametrize("nat", [NatType.NONE, NatType.FIREWALL])
def test_a_router_that_does_not_translate_has_nothing_to_map(nat: NatType) -> None:
    with pytest.raises(ValueError, match="upnp"):
        Site("a", nat=nat, upnp=True)


def test_an_ipv6_only_site_has_no_ipv4_to_map() -> None:
    with pytest.raises(ValueError, match="upnp"):
        Site("a", nat=NatType.SYMMETRIC, ipv4=False, ipv6=V6Mode.OPEN, upnp=True)


def test_the_topology_keeps_the_option() -> None:
    topo = Topology(sites=[Site("a", nat=NatType.SYMMETRIC, upnp=True), Site("b")])
    again = Topology.from_dict(topo.to_dict())
    assert [s.upnp for s in again.sites] == [True, False]


def test_miniupnpd_config() -> None:
    conf = upnp.config(ipaddress.IPv4Address("198.18.3.1"), ipaddress.IPv4Network("198.19.3.0/24"))
    lines = conf.splitlines()
    for want in ("ext_ifname=wan", "listening_ip=lan", "enable_natpmp=yes", "enable_upnp=yes",
                 "secure_mode=yes", "ext_perform_stun=yes", "ext_stun_host=198.18.3.1",
                 f"upnp_table_name={upnp.TABLE}", f"upnp_nat_table_name={upnp.TABLE}",
                 f"upnp_forward_chain={upnp.FORWARD_CHAIN}",
                 f"upnp_nat_chain={upnp.PREROUTING_CHAIN}"):
        assert want in lines
    # the site's LAN may map unprivileged ports; everything else is denied, in that order
    allow = lines.index("allow 1024-65535 198.19.3.0/24 1024-65535")
    assert lines.index("deny 0-65535 0.0.0.0/0 0-65535") > allow


def test_the_chains_miniupnpd_fills_exist_and_are_jumped_to() -> None:
    rules = upnp.ruleset()
    assert rules.startswith(f"table inet {upnp.TABLE} {{")
    for chain in (upnp.FORWARD_CHAIN, upnp.PREROUTING_CHAIN, upnp.POSTROUTING_CHAIN):
        assert f"chain {chain} {{" in rules and f"jump {chain};" in rules
