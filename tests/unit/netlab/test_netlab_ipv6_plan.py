"""netlab's IPv6 plan and rules (pure): site modes, addresses only from the documentation and
unique-local ranges, the ip6 rulesets, the dual-family UDP block."""

from __future__ import annotations

import ipaddress

import pytest

from enclave.netlab import nat
from enclave.netlab.topology import (
    LAB_V6_SPACE,
    NatType,
    Site,
    Topology,
    V6Mode,
    plan_public6,
    plan_site,
)


def test_site_ipv6_options_are_checked() -> None:
    with pytest.raises(ValueError, match="without IPv4"):
        Site("a", ipv4=False)
    with pytest.raises(ValueError, match="V6Mode"):
        Site("a", ipv6="firewall")  # type: ignore[arg-type]
    assert Site("a", ipv6=V6Mode.NAT66, ipv4=False).ipv6 is V6Mode.NAT66


def test_ipv6_internet_follows_the_sites() -> None:
    assert not Topology(sites=[Site("a")]).ipv6_internet
    assert Topology(sites=[Site("a")], ipv6=True).ipv6_internet
    assert Topology(sites=[Site("a"), Site("b", ipv6=V6Mode.OPEN)]).ipv6_internet


@pytest.mark.parametrize("mode", [V6Mode.OPEN, V6Mode.FIREWALL, V6Mode.NAT66,
                                  V6Mode.NAT66_SYMMETRIC])
def test_ipv6_plan_stays_in_lab_space(mode: V6Mode) -> None:
    plan = plan_site(250, Site("a", hosts=200, ipv6=mode))
    addrs = [plan.uplink_router6.ip, plan.uplink_inet6.ip, plan.lan_gw6.ip,
             *(i.ip for i in plan.hosts6.values())]
    assert all(any(a in net for net in LAB_V6_SPACE) for a in addrs)
    assert len(set(addrs)) == len(addrs)
    assert all(i.network == plan.lan6 for i in plan.hosts6.values())
    ula = ipaddress.IPv6Network("fd00::/8")
    assert plan.lan6.subnet_of(ula) is mode.translates
    assert plan.uplink_router6.ip == ipaddress.IPv6Address("2001:db8:1:250::1")
    pub = plan_public6(Topology(public_hosts=["plat", "r2"]))
    assert [str(i) for i in pub.values()] == ["2001:db8::11/64", "2001:db8::12/64"]


def test_ipv6_options_survive_the_state_file() -> None:
    topo = Topology(sites=[Site("a", nat=NatType.SYMMETRIC, ipv6=V6Mode.NAT66),
                           Site("b", ipv6=V6Mode.FIREWALL, ipv4=False)], ipv6=True)
    assert Topology.from_dict(topo.to_dict()) == topo
    old = {"sites": [{"name": "a"}]}  # a state file written before IPv6 existed
    assert Topology.from_dict(old).sites[0].ipv6 is V6Mode.OFF


def test_ip6_rulesets() -> None:
    assert nat.ruleset6(V6Mode.OFF) == "" and nat.ruleset6(V6Mode.OPEN) == ""
    fw = nat.ruleset6(V6Mode.FIREWALL)
    assert f"table ip6 {nat.TABLE6}" in fw
    assert 'iifname "wan" ct state established,related accept' in fw
    assert 'iifname "wan" drop' in fw and "masquerade" not in fw
    n66 = nat.ruleset6(V6Mode.NAT66)
    assert 'oifname "wan" masquerade' in n66 and "fully-random" not in n66
    assert "ipv6-icmp accept" in n66  # neighbour discovery to the router keeps working
    assert 'oifname "wan" masquerade fully-random' in nat.ruleset6(V6Mode.NAT66_SYMMETRIC)
    assert nat.block_udp_ruleset().startswith(f"table inet {nat.BLOCK_TABLE}")
