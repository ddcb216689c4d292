"""Prometheus /metrics from real `enclave up` agents and a real `enclave platform serve`.

    site "fc" (full cone)                  site "pr" (port restricted)         public: plat
      fc1: agent A --metrics 127.0.0.1:9101 <-- overlay --> pr1: agent B      platform with
                                                                              ENCLAVE_PLATFORM_METRICS

Each scrape runs inside the host's namespace and is parsed with prometheus_client's own parser.
A's byte and packet counters for B grow by at least what a TCP transfer over the overlay moved;
the platform counts both enrolments, both agents connected and the pair's introduction.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import on_path
from tests.support.platform import Platform
from tests.support.traffic import ping, tcp_transfer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
AGENT_METRICS = "127.0.0.1:9101"
PLATFORM_METRICS = "127.0.0.1:9102"
CONNECT_TIMEOUT = 20.0
Samples = dict[tuple[str, ...], float]


def scrape(host: Host, listen: str) -> Samples:
    """GET http://listen/metrics from inside host's namespace, parsed: (name, k=v...) -> value."""
    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as r:
            return r.headers["Content-Type"], r.read().decode()

    ctype, text = host.call(get)
    assert ctype.startswith("text/plain; version=")  # the Prometheus text format
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    topo = Topology(sites=[Site("fc", nat=NatType.FULL_CONE),
                           Site("pr", nat=NatType.PORT_RESTRICTED)], public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("metrics"), ("fc1", "pr1"),
                      plat_env={"ENCLAVE_PLATFORM_METRICS": PLATFORM_METRICS}) as world:
        _lab, _plat, agents = world
        a, b = agents["fc1"], agents["pr1"]
        start_all([a, b], "--metrics", AGENT_METRICS)
        intents_both_ways(a, b)
        # relay first: the pair may start on the relay; wait for the punched path it settles on
        wait_for(lambda: on_path(a, b, "direct-udp") and on_path(b, a, "direct-udp"),
                 timeout=CONNECT_TIMEOUT, interval=0.2, what="A and B connected on direct-udp")
        wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
        yield world


def test_agent_byte_counters_grow_with_traffic(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    a, b = agents["fc1"], agents["pr1"]
    before = scrape(a.host, AGENT_METRICS)
    peer = f"peer={b.name}"
    size = 2 << 20
    sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=size)
    assert sent == got  # digests of what was sent and what arrived
    assert ping(b.host, a.overlay_ip, count=3) == 3
    after = scrape(a.host, AGENT_METRICS)
    tx = "enclave_peer_transmit_bytes_total"
    assert after[(tx, peer)] - before[(tx, peer)] >= size
    for name in ("enclave_peer_receive_bytes_total", "enclave_peer_receive_packets_total",
                 "enclave_peer_transmit_packets_total"):
        assert after[(name, peer)] > before[(name, peer)], name
    assert after[("enclave_peers", "state=connected")] == 1
    assert after[("enclave_handshakes_total", "result=established")] >= 1
    paths = {k[1]: v for k, v in after.items() if k[0] == "enclave_peer_path" and peer in k}
    assert sorted(paths.values()) == [0] * (len(paths) - 1) + [1], paths  # exactly one path
    assert paths["path=direct-udp"] == 1  # full cone <-> port restricted: punched UDP
    assert after[("enclave_peer_rtt_seconds", peer)] > 0
    expiry = after[("enclave_certificate_expiry_timestamp_seconds",)]
    assert expiry > 0
    assert ("enclave_dropped_packets_total", "reason=rx_replay") in after


def test_platform_counts_enrolments_agents_and_introductions(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    lab, _plat, _agents = world
    m = scrape(lab.public_host("plat"), PLATFORM_METRICS)
    assert m[("enclave_platform_enrolments_total", "result=issued")] == 2
    assert m[("enclave_platform_agents_connected",)] == 2
    # the front door's view of the same two control channels; nothing refused or waiting
    assert m[("enclave_platform_connections", "state=authenticated")] >= 2
    assert m[("enclave_platform_requests_waiting",)] == 0
    assert m[("enclave_platform_requests_refused_total",)] == 0
    assert m[("enclave_platform_introductions_total", "result=introduced")] >= 1
    assert m[("enclave_platform_store_seconds_count", "op=enrol")] == 2
    assert m[("enclave_platform_store_seconds_count", "op=snapshot")] >= 1  # the hub's read
