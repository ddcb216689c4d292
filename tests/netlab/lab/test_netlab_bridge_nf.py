"""Lab bridges switch frames without netfilter (br_netfilter's bridge-nf-call-* = 0 per
namespace), and the NAT on the routed wan interface still translates."""

from __future__ import annotations

import os
import socket

import pytest

from enclave.netlab import netns
from enclave.netlab.lab import _BRIDGE_NF_OFF
from enclave.netlab.topology import NatType, Site, Topology
from tests.support.lab import LabFactory

pytestmark = [pytest.mark.netlab, pytest.mark.root]


def _read(ns: str, key: str) -> str:
    def body() -> str:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()

    return netns.call_in_netns(ns, body)


def test_bridge_netfilter_off_in_every_namespace_nat_still_works(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(
        Topology(sites=[Site("a", nat=NatType.PORT_RESTRICTED, hosts=2)], public_hosts=["pub"])
    )
    present = [k for k in _BRIDGE_NF_OFF if os.path.exists("/proc/sys/" + k.replace(".", "/"))]
    if not present:
        pytest.skip("br_netfilter is not loaded: nothing to switch off")
    for ns in lab.namespaces:
        assert {k: _read(ns, k) for k in present} == dict.fromkeys(present, "0"), ns
    # site hosts still reach the internet through the NAT, seen at the router's wan address
    a1, a2 = lab.host("a1"), lab.host("a2")
    pub = lab.host("pub")
    rx = pub.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((str(pub.ip), 9000))
    rx.settimeout(3)
    tx = a1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b"via nat", (str(pub.ip), 9000))
    data, src = rx.recvfrom(100)
    assert data == b"via nat" and src[0] == str(a1.public_ip) != str(a1.ip)
    # and two hosts on one site LAN talk across its bridge directly
    r2 = a2.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r2.bind((str(a2.ip), 9001))
    r2.settimeout(3)
    tx.sendto(b"on the lan", (str(a2.ip), 9001))
    data, src = r2.recvfrom(100)
    assert data == b"on the lan" and src[0] == str(a1.ip)
