"""Which of a lab host's own addresses become candidates (enclave.agent.discovery
private_addresses, read over netlink inside the host's namespace): the global IPv6 address and
the IPv4 one, never link-local, a deprecated IPv6 address (preferred lifetime over) or one that
is still tentative (duplicate address detection running: 20 probes, 20 s)."""

from __future__ import annotations

import pytest

from enclave.agent.discovery import private_addresses
from enclave.discovery.candidates import CandidateKind, interface_kind
from enclave.netlab import NatType, Site, Topology
from enclave.netlab.topology import V6Mode
from tests.support.lab import LabFactory

pytestmark = [pytest.mark.netlab, pytest.mark.root]

DEPRECATED = "2001:db8:2:1::99"
TENTATIVE = "2001:db8:2:1::98"


def test_own_addresses_as_candidates(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology(sites=[Site("a", nat=NatType.PORT_RESTRICTED,
                                           ipv6=V6Mode.FIREWALL)]))
    a1 = lab.host("a1")
    for cmd in (["ip", "addr", "add", f"{DEPRECATED}/64", "dev", "eth0", "nodad",
                 "preferred_lft", "0"],
                ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1"],
                ["sysctl", "-qw", "net.ipv6.conf.eth0.dad_transmits=20"],
                ["ip", "addr", "add", f"{TENTATIVE}/64", "dev", "eth0"]):
        res = a1.run(cmd)
        assert res.returncode == 0, res.stderr
    shown = a1.run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    assert "deprecated" in shown and "tentative" in shown, shown
    got = a1.call(private_addresses)
    assert got == sorted([str(a1.ip), str(a1.ip6)]), got
    assert interface_kind(str(a1.ip6)) is CandidateKind.PUBLIC
