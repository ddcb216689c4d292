"""enclave.agent.metrics: the collector renders the agent's views as Prometheus families that
parse back with prometheus_client's own parser; counters never go down."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from enclave.agent.metrics import AgentCollector, Totals, agent_registry
from enclave.promhttp import MetricsServer, parse_listen

EXPIRES = dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class FakeAgent:
    """The two local-API views the collector reads, as plain data (no agent needed)."""

    def __init__(self) -> None:
        self.peer_rows: list[dict[str, Any]] = [
            {"name": "3ZM8D", "state": "connected", "path": "direct-udp", "rtt_ms": 1.5,
             "rx_bytes": 1000, "tx_bytes": 2000, "rx_frames": 10, "tx_frames": 20,
             "dataplane": {"rx_replay": 2, "tx_no_key": 1}},
            {"name": "7QQQQ", "state": "connecting", "path": None, "rtt_ms": None,
             "rx_bytes": 0, "tx_bytes": 148},
        ]
        self.status_row: dict[str, Any] = {
            "cert_expires": EXPIRES.isoformat(),
            "dataplane": {"counters": {"rx_malformed": 4, "rx_unknown_index": 3}},
            "node_drops": {"init_invalid": 5, "malformed": 1},
            "handshakes": {"established": 2, "rekeyed": 7, "failed": 1},
        }

    def peers(self) -> list[dict[str, Any]]:
        return self.peer_rows

    def metrics_view(self) -> dict[str, Any]:
        return self.status_row


def scrape(agent: FakeAgent,
           collector: AgentCollector | None = None) -> dict[tuple[str, ...], float]:
    """name + sorted label values -> value, through the text format and the official parser."""
    if collector is None:
        text = generate_latest(agent_registry(agent)).decode()
    else:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(collector)
        text = generate_latest(reg).decode()
    out: dict[tuple[str, ...], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


def test_every_required_family_is_there_and_parses() -> None:
    m = scrape(FakeAgent())
    assert m[("enclave_peer_receive_bytes_total", "peer=3ZM8D")] == 1000
    assert m[("enclave_peer_transmit_bytes_total", "peer=3ZM8D")] == 2000
    assert m[("enclave_peer_receive_packets_total", "peer=3ZM8D")] == 10
    assert m[("enclave_peer_transmit_packets_total", "peer=3ZM8D")] == 20
    assert m[("enclave_peer_transmit_bytes_total", "peer=7QQQQ")] == 148
    assert m[("enclave_peer_receive_packets_total", "peer=7QQQQ")] == 0
    assert m[("enclave_dropped_packets_total", "reason=rx_replay")] == 2
    assert m[("enclave_dropped_packets_total", "reason=tx_no_key")] == 1
    assert m[("enclave_dropped_packets_total", "reason=rx_malformed")] == 4
    assert m[("enclave_dropped_packets_total", "reason=node_init_invalid")] == 5
    assert m[("enclave_peers", "state=connected")] == 1
    assert m[("enclave_peers", "state=connecting")] == 1
    assert m[("enclave_peers", "state=failed")] == 0
    assert m[("enclave_handshakes_total", "result=established")] == 2
    assert m[("enclave_handshakes_total", "result=rekeyed")] == 7
    assert m[("enclave_handshakes_total", "result=failed")] == 1
    assert m[("enclave_handshakes_total", "result=rejected")] == 5
    assert m[("enclave_peer_rtt_seconds", "peer=3ZM8D")] == pytest.approx(0.0015)
    assert ("enclave_peer_rtt_seconds", "peer=7QQQQ") not in m
    assert m[("enclave_peer_path", "path=direct-udp", "peer=3ZM8D")] == 1
    assert m[("enclave_peer_path", "path=relay-udp", "peer=3ZM8D")] == 0
    assert not any(k[0] == "enclave_peer_path" and "peer=7QQQQ" in k for k in m)
    assert m[("enclave_certificate_expiry_timestamp_seconds",)] == EXPIRES.timestamp()


def test_a_restarted_fast_path_slot_does_not_make_a_counter_go_down() -> None:
    agent = FakeAgent()
    collector = AgentCollector(agent)
    assert scrape(agent, collector)[("enclave_peer_receive_bytes_total", "peer=3ZM8D")] == 1000
    agent.peer_rows[0]["rx_bytes"] = 300  # slot freed and re-used: the source restarts at 0
    assert scrape(agent, collector)[("enclave_peer_receive_bytes_total", "peer=3ZM8D")] == 1300


def test_a_removed_peer_keeps_its_drops_counted() -> None:
    agent = FakeAgent()
    collector = AgentCollector(agent)
    scrape(agent, collector)
    del agent.peer_rows[0]
    m = scrape(agent, collector)
    assert m[("enclave_dropped_packets_total", "reason=rx_replay")] == 2
    assert ("enclave_peer_receive_bytes_total", "peer=3ZM8D") not in m
    agent.peer_rows.append({"name": "3ZM8D", "state": "connected", "path": "relay-udp",
                            "rx_bytes": 5, "tx_bytes": 5, "dataplane": {"rx_replay": 1}})
    m = scrape(agent, collector)
    assert m[("enclave_dropped_packets_total", "reason=rx_replay")] == 3


def test_an_agent_without_data_plane_still_renders() -> None:
    agent = FakeAgent()
    agent.status_row = {"cert_expires": EXPIRES.isoformat(), "dataplane": None,
                        "node_drops": {}, "handshakes": {}}
    agent.peer_rows = [{"name": "3ZM8D", "state": "introduced", "path": None, "rtt_ms": None,
                        "rx_bytes": None, "tx_bytes": None}]
    m = scrape(agent)
    assert m[("enclave_peers", "state=introduced")] == 1
    assert m[("enclave_peer_receive_bytes_total", "peer=3ZM8D")] == 0
    assert m[("enclave_handshakes_total", "result=rejected")] == 0


def test_totals_add_the_last_value_when_the_source_restarts() -> None:
    t = Totals()
    assert [t.observe(("x",), v) for v in (5, 7, 2, 3, 0, 4)] == [5, 7, 9, 10, 10, 14]
    t.forget(("x",))
    assert t.observe(("x",), 1) == 1


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:9101", ("localhost", 9101)),
    ("[::1]:9101", ("::1", 9101)),
])
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9101", ":9101", "host:", "host:0", "host:70000",
                                  "::1:9101", "[nope]:9101", "host:9x"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_the_server_answers_metrics_on_loopback_and_404_elsewhere() -> None:
    agent = FakeAgent()

    async def main() -> None:
        server = MetricsServer(agent_registry(agent), "127.0.0.1", 0)
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.port}"

            def get(path: str) -> tuple[int, str, str]:
                try:
                    with urllib.request.urlopen(url + path, timeout=5) as r:
                        return r.status, r.headers["Content-Type"], r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, "", ""

            status, ctype, body = await asyncio.to_thread(get, "/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            names = {f.name for f in text_string_to_metric_families(body)}
            assert {"enclave_peer_receive_bytes", "enclave_peers",
                    "enclave_certificate_expiry_timestamp_seconds"} <= names
            assert (await asyncio.to_thread(get, "/"))[0] == 404
        finally:
            await server.close()

    asyncio.run(main())
