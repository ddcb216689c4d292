"""The agent's Prometheus metrics: a custom collector that reads the agent at each scrape.

    `enclave up --metrics HOST:PORT` -> enclave.promhttp.MetricsServer (GET /metrics, agent loop)
        -> AgentCollector.collect() -> AgentView.peers() / .metrics_view()
              peers():        per-peer bytes and frames (control messages + the compiled fast
                              path's per-slot counters, read while its threads run), state,
                              path, rtt
              metrics_view(): the fast path's global counters, the Node's silent drops by
                              reason, handshakes by result, the certificate's notAfter

Exported (peer = system name):
    enclave_peer_receive_bytes_total{peer}      enclave_peer_transmit_bytes_total{peer}
    enclave_peer_receive_packets_total{peer}    enclave_peer_transmit_packets_total{peer}
    enclave_dropped_packets_total{reason}       reason = the fast path's counter name
                                                (rx_replay, rx_ip_spoofed, rx_arp_spoofed,
                                                tx_no_key, ...) or node_<reason>
    enclave_peers{state}                        connecting | relay-wait | connected | closed |
                                                failed | introduced
    enclave_handshakes_total{result}            established | rekeyed | failed | rejected
    enclave_peer_rtt_seconds{peer}              last authenticated probe round trip
    enclave_peer_path{peer,path}                1 for the path in use, 0 for the others
    enclave_certificate_expiry_timestamp_seconds

The fast path's per-peer counters start again at zero when a peer's slot is freed and reused;
Totals keeps every exported counter monotonic for the life of the process.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enclave import _fastpath as fp

PEER_STATES = ("connecting", "relay-wait", "connected", "closed", "failed", "introduced")
PATHS = ("lan", "direct-udp", "direct-tcp", "relay-udp", "relay-tls")
# the fast path's counters that count a dropped packet (per peer, global): named where they
# are counted (enclave/_fp_dataplane.pxi), so a new drop reason is exported without a change here
PEER_DROP_COUNTERS: tuple[str, ...] = fp.PEER_DROP_COUNTERS
GLOBAL_DROP_COUNTERS: tuple[str, ...] = fp.GLOBAL_DROP_COUNTERS
# Node drops that are handshakes refused (certificate, signature or intent checks failed)
REJECTED_HANDSHAKES = ("init_invalid", "response_invalid", "confirm_invalid")


class AgentView(Protocol):
    """What the collector reads: enclave.agent.daemon.Agent's in-memory views."""

    def peers(self) -> list[dict[str, Any]]: ...

    def metrics_view(self) -> dict[str, Any]: ...


class Totals:
    """Counters that never go down: a source that restarts at zero (a freed data-plane slot)
    adds its last value to a base. Keyed by (metric, labels...)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], int] = {}
        self._base: dict[tuple[str, ...], int] = {}

    def observe(self, key: tuple[str, ...], value: int) -> int:
        last = self._last.get(key, 0)
        if value < last:
            self._base[key] = self._base.get(key, 0) + last
        self._last[key] = value
        return self._base.get(key, 0) + value

    def forget(self, key: tuple[str, ...]) -> None:
        self._last.pop(key, None)
        self._base.pop(key, None)


def _int(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key)
    return int(value) if isinstance(value, int | float) else 0


class AgentCollector(Collector):
    """Reads `agent` at each scrape (call collect() on the agent's event loop)."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent
        self.totals = Totals()
        self._peer_drops: dict[str, dict[str, int]] = {}  # peer -> reason -> total, last scrape
        self._retired: dict[str, int] = {}  # drops counted by peers no longer in the table

    def collect(self) -> Iterator[Metric]:
        peers = self.agent.peers()
        status = self.agent.metrics_view()
        yield from self._peer_counters(peers)
        yield self._dropped(peers, status)
        yield self._marked(status)
        yield self._states(peers)
        yield self._handshakes(status)
        yield from self._paths(peers)
        expiry = GaugeMetricFamily("enclave_certificate_expiry_timestamp_seconds",
                                   "When this system's certificate expires (unix time).")
        expires = status.get("cert_expires")
        if isinstance(expires, str):
            expiry.add_metric([], datetime.datetime.fromisoformat(expires).timestamp())
        yield expiry

    def _peer_counters(self, peers: list[dict[str, Any]]) -> Iterable[Metric]:
        fams = {
            ("rx_bytes",): CounterMetricFamily(
                "enclave_peer_receive_bytes", "Bytes received from the peer (data and control).",
                labels=["peer"]),
            ("tx_bytes",): CounterMetricFamily(
                "enclave_peer_transmit_bytes", "Bytes sent to the peer (data and control).",
                labels=["peer"]),
            ("rx_frames",): CounterMetricFamily(
                "enclave_peer_receive_packets", "Frames received from the peer by the data path.",
                labels=["peer"]),
            ("tx_frames",): CounterMetricFamily(
                "enclave_peer_transmit_packets", "Frames sent to the peer by the data path.",
                labels=["peer"]),
        }
        for p in peers:
            name = str(p["name"])
            for (key,), fam in fams.items():
                fam.add_metric([name], self.totals.observe((key, name), _int(p, key)))
        return fams.values()

    def _dropped(self, peers: list[dict[str, Any]], status: Mapping[str, Any]) -> Metric:
        fam = CounterMetricFamily("enclave_dropped_packets",
                                  "Packets dropped, by reason (fast path counters, node_*: "
                                  "the session layer's silent drops).", labels=["reason"])
        current: dict[str, dict[str, int]] = {}
        for p in peers:
            dp = p.get("dataplane")
            name = str(p["name"])
            if isinstance(dp, dict):
                current[name] = {r: self.totals.observe((r, name), _int(dp, r))
                                 for r in PEER_DROP_COUNTERS}
        for name in self._peer_drops.keys() - current.keys():  # removed: keep what it counted
            for reason, value in self._peer_drops[name].items():
                self._retired[reason] = self._retired.get(reason, 0) + value
                self.totals.forget((reason, name))
        self._peer_drops = current
        for reason in PEER_DROP_COUNTERS:
            fam.add_metric([reason], self._retired.get(reason, 0)
                           + sum(v[reason] for v in current.values()))
        dataplane = status.get("dataplane")
        counters = dataplane.get("counters") if isinstance(dataplane, dict) else None
        for reason in GLOBAL_DROP_COUNTERS:
            value = _int(counters, reason) if isinstance(counters, dict) else 0
            fam.add_metric([reason], self.totals.observe((reason,), value))
        node = status.get("node_drops")
        for reason, value in sorted(node.items() if isinstance(node, dict) else ()):
            fam.add_metric([f"node_{reason}"], self.totals.observe(("node", reason), int(value)))
        return fam

    def _marked(self, status: Mapping[str, Any]) -> Metric:
        fam = CounterMetricFamily("enclave_ecn_marked_packets",
                                  "Packets the data plane's AQM (CoDel) marked CE instead of "
                                  "dropping them, by direction (its drops: enclave_dropped_"
                                  "packets, reasons tx_aqm_drops / rx_aqm_drops).",
                                  labels=["direction"])
        dataplane = status.get("dataplane")
        counters = dataplane.get("counters") if isinstance(dataplane, dict) else None
        for direction in ("tx", "rx"):
            key = f"{direction}_aqm_marks"
            value = _int(counters, key) if isinstance(counters, dict) else 0
            fam.add_metric([direction], self.totals.observe((key,), value))
        return fam

    def _states(self, peers: list[dict[str, Any]]) -> Metric:
        fam = GaugeMetricFamily("enclave_peers", "Introduced peers by connection state.",
                                labels=["state"])
        counts = dict.fromkeys(PEER_STATES, 0)
        for p in peers:
            state = str(p.get("state") or "introduced")
            counts[state] = counts.get(state, 0) + 1
        for state, n in counts.items():
            fam.add_metric([state], n)
        return fam

    def _handshakes(self, status: Mapping[str, Any]) -> Metric:
        fam = CounterMetricFamily("enclave_handshakes", "Handshakes by result (rejected: the "
                                  "peer's certificate, signature or intent did not check out).",
                                  labels=["result"])
        counts = status.get("handshakes")
        results = dict(counts) if isinstance(counts, dict) else {}
        node = status.get("node_drops")
        results["rejected"] = sum(_int(node, r) for r in REJECTED_HANDSHAKES) \
            if isinstance(node, dict) else 0
        for result, value in sorted(results.items()):
            fam.add_metric([result], self.totals.observe(("handshake", result), int(value)))
        return fam

    def _paths(self, peers: list[dict[str, Any]]) -> Iterable[Metric]:
        rtt = GaugeMetricFamily("enclave_peer_rtt_seconds",
                                "Round trip to the peer over its current path.", labels=["peer"])
        path = GaugeMetricFamily("enclave_peer_path", "1 for the path the peer is reached over.",
                                 labels=["peer", "path"])
        for p in peers:
            name = str(p["name"])
            if isinstance(p.get("rtt_ms"), int | float):
                rtt.add_metric([name], float(p["rtt_ms"]) / 1000)
            current = p.get("path")
            if current is not None:
                for kind in PATHS:
                    path.add_metric([name, kind], 1 if kind == current else 0)
        return (rtt, path)


def agent_registry(agent: AgentView) -> CollectorRegistry:
    """A registry holding only the agent's collector (no process/platform default metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry
