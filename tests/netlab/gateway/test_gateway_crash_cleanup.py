"""A gateway that crashed (no close()) leaves its nftables tables, ip rule and ip_forward=1
behind; the next run cleans them up at its first apply() whatever its role, and restores
ip_forward from the record the crashed run kept in its state directory.

    lab host a1 (its own namespace): GatewayManager serving 198.19.1.0/24, ip_forward was 0
        run 1: apply() -> tables, ip_forward=1, record written; then "crash" (never closed)
        run 2: a plain member (serves nothing), same state dir: apply() -> all gone, 0 again
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from enclave.agent.gateway import FORWARD_RECORD, GatewayManager
from enclave.netlab import Host, NatType, Site, Topology
from enclave.policy.gateway import TABLE, LocalView, parse_routes
from tests.support.lab import LabFactory


def _tables(host: Host) -> str:
    return str(host.run(["nft", "list", "tables"], check=True).stdout)


def _forward(host: Host) -> str:
    return str(host.run(["sysctl", "-n", "net.ipv4.ip_forward"], check=True).stdout).strip()


def test_crashed_gateway_is_cleaned_up_by_a_non_gateway_run(lab_factory: LabFactory,
                                                            tmp_path: Path) -> None:
    lab = lab_factory(Topology(sites=[Site("a", nat=NatType.FULL_CONE)]))
    host = lab.host("a1")
    host.run(["ip", "tuntap", "add", "enclave0", "mode", "tap"], check=True)
    host.run(["ip", "addr", "add", "100.64.0.1/10", "dev", "enclave0"], check=True)
    host.run(["ip", "link", "set", "enclave0", "up"], check=True)
    host.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    record = tmp_path / FORWARD_RECORD
    overlay = ipaddress.IPv4Interface("100.64.0.1/10")

    crashed = GatewayManager(LocalView("enclave0", overlay, parse_routes("198.19.1.0/24")),
                             record)
    host.call(crashed.apply)
    assert f"table ip {TABLE}" in _tables(host) and _forward(host) == "1"
    assert record.read_text().strip() == "0"
    # ... the process dies here: close() never runs

    member = GatewayManager(LocalView("enclave0", overlay), record)  # serves nothing now
    host.call(member.apply)
    assert TABLE not in _tables(host)
    assert _forward(host) == "0"
    assert not record.exists()
    rules = str(host.run(["ip", "rule", "list"], check=True).stdout)
    assert "51820" not in rules
