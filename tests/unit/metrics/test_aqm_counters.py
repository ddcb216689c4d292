"""The AQM's counters reach the Prometheus collector: its drops as enclave_dropped_packets
reasons (by the fast path's own GLOBAL_DROP_COUNTERS list), its ECN marks as their own
counter, by direction."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from enclave import _fastpath as fp
from enclave.agent.metrics import agent_registry


class Agent:
    def __init__(self, counters: dict[str, int]) -> None:
        self.counters = counters

    def peers(self) -> list[dict[str, Any]]:
        return []

    def metrics_view(self) -> dict[str, Any]:
        return {"dataplane": {"counters": self.counters}}


def samples(agent: Agent, name: str, label: str) -> dict[str, float]:
    text = generate_latest(agent_registry(agent)).decode()
    return {s.labels[label]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


def test_aqm_drops_are_drop_reasons() -> None:
    assert {"tx_aqm_drops", "rx_aqm_drops"} <= set(fp.GLOBAL_DROP_COUNTERS)
    got = samples(Agent({"tx_aqm_drops": 5, "rx_aqm_drops": 9}),
                  "enclave_dropped_packets_total", "reason")
    assert got["tx_aqm_drops"] == 5 and got["rx_aqm_drops"] == 9


def test_aqm_marks_are_exported_by_direction() -> None:
    got = samples(Agent({"tx_aqm_marks": 4, "rx_aqm_marks": 11}),
                  "enclave_ecn_marked_packets_total", "direction")
    assert got == {"tx": 4.0, "rx": 11.0}


def test_no_data_plane_exports_zero_marks() -> None:
    agent = Agent({})
    agent.counters = {}
    got = samples(agent, "enclave_ecn_marked_packets_total", "direction")
    assert got == {"tx": 0.0, "rx": 0.0}
