"""Control plane through real NATs: a platform process on a public host, `enclave up` agents in
site namespaces behind full-cone, port-restricted and symmetric NATs.

Shows: reflected public mappings (UDP on two ports, TCP) are the NAT's address, symmetric NAT is
reported as address-and-port-dependent, mutual intent introduces within 2 s with the reflected
candidates, a third system learns nothing, and `intent remove` withdraws within 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.agent import AgentProc
from tests.support.lab import platform_lab_of, runner, spawner
from tests.support.platform import Platform
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]


def _agent_proc(host: Host, state: Path, log: Path) -> AgentProc:
    return AgentProc(state, runner(host), spawner(host), log, 51820)


@pytest.fixture(scope="module")
def natlab(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Lab, Platform, dict[str, AgentProc]]]:
    topo = Topology(
        sites=[Site("fc", nat=NatType.FULL_CONE, hosts=2), Site("pr", nat=NatType.PORT_RESTRICTED),
               Site("sy", nat=NatType.SYMMETRIC)],
        public_hosts=["plat"],
    )
    names = ("fc1", "fc2", "pr1", "sy1")
    with platform_lab_of(_agent_proc, topo, tmp_path_factory.mktemp("natlab"), names) as world:
        for a in world[2].values():
            a.up()
        yield world


def _mapped(a: AgentProc) -> dict[str, Any] | None:
    st = a.status()
    m = st["mappings"]
    return st if m["tcp"] and len(m["udp"]) == 2 and all(m["udp"]) else None


@pytest.mark.parametrize("name, nat", [
    ("fc1", "endpoint-independent"),
    ("pr1", "endpoint-independent"),
    ("sy1", "address-and-port-dependent"),
])
def test_reflected_mapping_and_nat(natlab: tuple[Lab, Platform, dict[str, AgentProc]],
                                   name: str, nat: str) -> None:
    lab, _plat, agents = natlab
    host = lab.host(name)
    st = wait_for(lambda: _mapped(agents[name]), timeout=15, what=f"{name} mappings")
    udp = [m.rsplit(":", 1) for m in st["mappings"]["udp"]]
    tcp_host = st["mappings"]["tcp"].rsplit(":", 1)[0]
    assert {u[0] for u in udp} == {str(host.public_ip)}
    assert tcp_host == str(host.public_ip)
    assert st["nat"] == nat
    if nat == "address-and-port-dependent":
        assert udp[0][1] != udp[1][1]
    else:
        assert udp[0][1] == udp[1][1]
    assert str(host.ip) in st["private_addresses"]


def test_introduction_through_nat_and_cloaking(
        natlab: tuple[Lab, Platform, dict[str, AgentProc]]) -> None:
    lab, _plat, agents = natlab
    a, s, third = agents["fc1"], agents["sy1"], agents["pr1"]
    for x in (a, s, third):
        wait_for(lambda x=x: _mapped(x), timeout=15, what="mappings")
    a.intent("add", s.name)
    third.intent("add", a.name)
    time.sleep(0.5)
    assert a.peers() == [] and s.peers() == [] and third.peers() == []
    s.intent("add", a.name)
    t0 = time.time()
    wait_for(lambda: a.peer_names() == {s.name} and s.peer_names() == {a.name}, timeout=10,
             what="introduction")
    assert a.introduced_at(s.name) - t0 < 2.0 and s.introduced_at(a.name) - t0 < 2.0
    intro = a.peers()[0]
    assert intro["nat"] == "address-and-port-dependent"
    sy_public = str(lab.host("sy1").public_ip)
    sy_private = str(lab.host("sy1").ip)
    assert any(c.startswith(f"udp:{sy_public}:") for c in intro["candidates"])
    assert f"udp:{sy_private}:51820" in intro["candidates"]
    assert third.peers() == []  # intent towards a only: learns nothing of a or s
    a.intent("remove", s.name)
    t0 = time.time()
    wait_for(lambda: a.peers() == [] and s.peers() == [], timeout=10, what="withdrawal")
    assert a.withdrawn_at(s.name) - t0 < 2.0 and s.withdrawn_at(a.name) - t0 < 2.0


def test_lan_neighbours_see_private_candidates(
        natlab: tuple[Lab, Platform, dict[str, AgentProc]], tmp_path: Path) -> None:
    lab, _plat, agents = natlab
    a, b = agents["fc1"], agents["fc2"]
    a.intent("add", b.name)
    b.intent("add", a.name)
    wait_for(lambda: b.name in a.peer_names(), timeout=5, what="introduction")
    cands = a.peers()[0]["candidates"]
    assert f"udp:{lab.host('fc2').ip}:51820" in cands
    a.intent("remove", b.name)
    wait_for(lambda: a.peers() == [], timeout=5, what="withdrawal")
