"""Real agents relayed by a real platform: the relay's DATA crosses in its native forwarder.

    ss1 (symmetric NAT) <---- plat: UDP relay (thread enclave-relay) ----> st1 (symmetric NAT)

Both NATs map per destination, so the pair cannot punch and relays (path relay-udp).  A ping
and a 4 MiB TCP transfer cross the overlay; the platform's metrics show the forwarder's
counters moving while the DATA handled in Python stays ~0 (only header-only DATA would get
there), with no drops for want of a table entry once the pair is up.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enclave.netlab import Host, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.traffic import ping, tcp_transfer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
PLATFORM_METRICS = "127.0.0.1:9102"
Samples = dict[tuple[str, ...], float]


def scrape(host: Host) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://{PLATFORM_METRICS}/metrics", timeout=5) as r:
            return str(r.read().decode())

    out: Samples = {}
    for fam in text_string_to_metric_families(host.call(get)):
        for s in fam.samples:
            out[(s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def relayed(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Host, Platform, Agent, Agent]]:
    topo = Topology(sites=[Site("ss", nat=NatType.SYMMETRIC), Site("st", nat=NatType.SYMMETRIC)],
                    public_hosts=["plat"])
    env = {"ENCLAVE_PLATFORM_METRICS": PLATFORM_METRICS}
    with platform_lab(topo, tmp_path_factory.mktemp("native"), ["ss1", "st1"],
                      plat_env=env) as (lab, plat, ag):
        start_all(ag.values())
        yield lab.host("plat"), plat, ag["ss1"], ag["st1"]


def test_relayed_traffic_crosses_the_native_forwarder(
        relayed: tuple[Host, Platform, Agent, Agent]) -> None:
    host, plat, a, b = relayed
    before = scrape(host)
    intents_both_ways(a, b)
    pa = wait_for(lambda: a.connected(b.name), timeout=20, interval=0.2, what="relayed session")
    assert pa is not None and pa["path"] == "relay-udp", pa
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
    sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=4 << 20, timeout=30)
    assert sent == got
    m = scrape(host)

    def moved(name: str) -> float:
        return m[(name,)] - before.get((name,), 0.0)

    # 4 MiB in ~1,300-byte datagrams: >= 3,000 forwarded (data one way, acks the other)
    assert moved("enclave_platform_relay_forwarded_packets_total") >= 3000
    assert moved("enclave_platform_relay_forwarded_bytes_total") >= 4 << 20
    assert moved("enclave_platform_relay_python_data_packets_total") <= 5
    # batched: fewer recvmmsg calls than datagrams (the agents' GSO runs arrive whole, here)
    assert 0 < m[("enclave_platform_relay_batches_total", "kind=recvmmsg")] < moved(
        "enclave_platform_relay_forwarded_packets_total")
    pa, pb = a.connected(b.name), b.connected(a.name)
    assert pa is not None and pb is not None and pa["path"] == pb["path"] == "relay-udp"
    assert "Traceback" not in plat.log(), plat.log()[-3000:]
