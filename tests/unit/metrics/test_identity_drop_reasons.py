"""The identity-binding drops (rx_ip_spoofed, rx_arp_spoofed) reach the Prometheus collector
and the peers' drop totals by the fast path's own list of drop counters, with no list of
reasons kept elsewhere."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from enclave import _fastpath as fp
from enclave.agent import connections
from enclave.agent.metrics import agent_registry


class Agent:
    def __init__(self, dataplane: dict[str, int]) -> None:
        self.dataplane = dataplane

    def peers(self) -> list[dict[str, Any]]:
        return [{"name": "3ZM8D", "state": "connected", "dataplane": self.dataplane}]

    def metrics_view(self) -> dict[str, Any]:
        return {}


def dropped(agent: Agent) -> dict[str, float]:
    text = generate_latest(agent_registry(agent)).decode()
    return {s.labels["reason"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "enclave_dropped_packets_total"}


def test_the_fast_path_names_the_identity_drops() -> None:
    assert {"rx_spoofed", "rx_ip_spoofed", "rx_arp_spoofed"} <= set(fp.PEER_DROP_COUNTERS)
    assert connections._DROP_COUNTERS == fp.PEER_DROP_COUNTERS


def test_identity_drops_are_exported_by_reason() -> None:
    got = dropped(Agent({"rx_ip_spoofed": 7, "rx_arp_spoofed": 3, "rx_spoofed": 1}))
    assert got["rx_ip_spoofed"] == 7
    assert got["rx_arp_spoofed"] == 3
    assert got["rx_spoofed"] == 1
