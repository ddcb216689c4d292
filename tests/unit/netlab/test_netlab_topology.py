"""netlab's pure parts: topology validation, address plan, generated rules, state helpers."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.netlab import impair, nat, state
from enclave.netlab.topology import NatType, Netem, Site, Topology, plan_public, plan_site


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "A"}, "site name"),
        ({"name": "toolongname"}, "site name"),
        ({"name": "a-b"}, "site name"),
        ({"name": "a", "hosts": 0}, "hosts"),
        ({"name": "a", "mtu": 500}, "mtu"),
        ({"name": "a", "lan_mtu": 70000}, "lan_mtu"),
        ({"name": "a", "nat": "symmetric"}, "NatType"),
    ],
)
def test_site_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Site(**kwargs)  # type: ignore[arg-type]


def test_topology_rejects_duplicates_and_reserved_names() -> None:
    with pytest.raises(ValueError, match="duplicate site"):
        Topology(sites=[Site("a"), Site("a")])
    with pytest.raises(ValueError, match="duplicate host"):
        Topology(sites=[Site("a", hosts=2)], public_hosts=["a2"])
    with pytest.raises(ValueError, match="duplicate host"):  # site a host 11 vs site a1 host 1
        Topology(sites=[Site("a", hosts=11), Site("a1")])
    with pytest.raises(ValueError, match="reserved"):
        Topology(public_hosts=["inet"])
    with pytest.raises(ValueError, match="host name"):
        Topology(public_hosts=["Bad Name"])


def test_netem_validation_and_tc_args() -> None:
    with pytest.raises(ValueError, match="reorder needs a delay"):
        Netem(reorder_pct=10)
    with pytest.raises(ValueError, match="jitter needs a delay"):
        Netem(jitter_ms=3)
    with pytest.raises(ValueError, match=">= 0"):
        Netem(loss_pct=-1)
    with pytest.raises(ValueError, match="<= 100"):
        Netem(loss_pct=101)
    with pytest.raises(ValueError, match="rate_mbit"):
        Netem(rate_mbit=0)
    assert Netem().tc_args() == []
    full = Netem(delay_ms=20, jitter_ms=5, loss_pct=1.5, reorder_pct=25, rate_mbit=100)
    assert full.tc_args() == [
        "delay", "20ms", "5ms", "loss", "1.5%", "reorder", "25%", "rate", "100000kbit",
    ]  # fmt: skip


def test_address_plan() -> None:
    plan = plan_site(3, Site("c", hosts=2))
    assert plan.uplink_router == ipaddress.IPv4Interface("198.18.3.1/24")
    assert plan.uplink_inet == ipaddress.IPv4Interface("198.18.3.254/24")
    assert plan.lan == ipaddress.IPv4Network("198.19.3.0/24")
    assert {n: str(i) for n, i in plan.hosts.items()} == {
        "c1": "198.19.3.11/24",
        "c2": "198.19.3.12/24",
    }
    pub = plan_public(Topology(public_hosts=["platform", "r1"]))
    assert [str(i.ip) for i in pub.values()] == ["198.18.0.11", "198.18.0.12"]
    everything = [plan.uplink_router, plan.uplink_inet, plan.lan_gw, *plan.hosts.values()]
    assert all(i.ip in ipaddress.IPv4Network("198.18.0.0/15") for i in everything)
    with pytest.raises(ValueError):
        plan_site(0, Site("x"))


def test_topology_dict_roundtrip() -> None:
    topo = Topology(
        sites=[
            Site("a", nat=NatType.SYMMETRIC, hosts=2, mtu=1400, netem=Netem(delay_ms=5)),
            Site("b", nat=NatType.FIREWALL),
        ],
        public_hosts=["platform"],
    )
    again = Topology.from_dict(json.loads(json.dumps(topo.to_dict())))
    assert again == topo
    with pytest.raises(ValueError):
        Topology.from_dict({"sites": [{"name": "a", "nat": "carrier-grade"}]})
    with pytest.raises(ValueError):
        Topology.from_dict({"sites": "a"})


def test_nat_rulesets_hold_the_mechanism_of_each_type() -> None:
    pub = ipaddress.IPv4Address("198.18.1.1")
    assert nat.ruleset(NatType.NONE, pub) == ""
    sym = nat.ruleset(NatType.SYMMETRIC, pub)
    assert "masquerade fully-random" in sym and "eim_out" not in sym
    port = nat.ruleset(NatType.PORT_RESTRICTED, pub)
    assert "masquerade\n" in port and "fully-random" not in port
    full = nat.ruleset(NatType.FULL_CONE, pub)
    assert "@eim_in" in full and "@peers dnat" not in full and "snat ip to 198.18.1.1" in full
    rest = nat.ruleset(NatType.RESTRICTED, pub)
    assert "udp dport . ip saddr @peers dnat" in rest
    fw = nat.ruleset(NatType.FIREWALL, pub)
    assert "masquerade" not in fw and 'iifname "wan" drop' in fw
    for text in (sym, port, full, rest, fw):
        assert text.count("{") == text.count("}")


def test_impair_fallback_rules() -> None:
    assert impair.tbf_args(100)[:2] == ["rate", "100000kbit"]
    assert int(impair.tbf_args(1)[3]) >= 32 * 1024  # burst never below 32 KiB
    rules = impair.loss_ruleset(2.5)
    assert rules.count("numgen random mod 1000000 < 25000 drop") == 2


def test_state_helpers(tmp_path: Path) -> None:
    me = state.process_start_time(os.getpid())
    assert me is not None and state.owner_alive(os.getpid(), me)
    assert not state.owner_alive(os.getpid(), me + 1)  # PID reused by another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not state.owner_alive(child.pid, None)
    corrupt = tmp_path / "x.json"
    corrupt.write_text("{not json")
    assert state.read_state(corrupt) is None
    corrupt.write_text('["a list"]')
    assert state.read_state(corrupt) is None
    good = tmp_path / "y.json"
    state.write_state(good, {"run_id": "abcdef", "namespaces": []})
    assert state.read_state(good) == {"run_id": "abcdef", "namespaces": []}
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError):
        state.state_path("../etc/passwd")
    assert state.prefix_for("abcdef") == "enl-abcdef-"
    assert len(state.new_run_id()) == 6
