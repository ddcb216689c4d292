"""Two real agents (`enclave up`, platform on the lab) with 1, 4 and the default number of
data-plane workers: the status names the workers, the TAP has that many queues, and
sequence-numbered UDP flows both ways arrive complete, once each and in order.

    plat (platform)        pa: enclave up [--threads N] <--direct UDP--> pb: enclave up [...]
                           8 flows pa -> pb and 8 flows pb -> pa at the same time
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from enclave import sysinfo
from enclave.netlab import Lab, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, up_pair
from tests.support.platform import Platform
from tests.support.seqflows import SeqReceiver, faults, send_flows
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

FLOWS = 8
COUNT = 200
PORT = 7200


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    topo = Topology(public_hosts=["plat", "pa", "pb"])
    with platform_lab(topo, tmp_path_factory.mktemp("mq"), ("pa", "pb")) as world:
        yield world


def queues(agent: Agent) -> int:
    res = agent.host.run(["ls", "/sys/class/net/enclave0/queues"], check=True)
    return sum(1 for n in res.stdout.split() if n.startswith("tx-"))


@pytest.mark.parametrize("threads", [1, 4, None], ids=["threads-1", "threads-4", "default"])
def test_agents_deliver_every_datagram_once_in_order(
        world: tuple[Lab, Platform, dict[str, Agent]], threads: int | None) -> None:
    _, _, agents = world
    a, b = agents["pa"], agents["pb"]
    want = threads if threads is not None else sysinfo.default_threads()
    extra = ("--threads", str(threads)) if threads is not None else ()
    up_pair(a, b, *extra)
    try:
        intents_both_ways(a, b)
        for x, y in ((a, b), (b, a)):
            wait_for(lambda x=x, y=y: x.connected(y.name), timeout=15, interval=0.1,
                     what=f"{x.name} connected to {y.name}")
        for x in (a, b):
            assert x.status()["dataplane"]["threads"] == want
            assert queues(x) == want
        wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
        assert ping(b.host, a.overlay_ip, count=1) == 1
        rb = SeqReceiver(b.host, b.overlay_ip, PORT)
        ra = SeqReceiver(a.host, a.overlay_ip, PORT)
        try:
            jobs = [threading.Thread(target=send_flows, args=(a.host, b.overlay_ip, PORT),
                                     kwargs={"tag": 1, "flows": FLOWS, "count": COUNT}),
                    threading.Thread(target=send_flows, args=(b.host, a.overlay_ip, PORT),
                                     kwargs={"tag": 2, "flows": FLOWS, "count": COUNT})]
            for j in jobs:
                j.start()
            for j in jobs:
                j.join(60)
            rb.settle(FLOWS * COUNT)
            ra.settle(FLOWS * COUNT)
        finally:
            rb.close()
            ra.close()
        problems = faults(rb.got, [1], FLOWS, COUNT) + faults(ra.got, [2], FLOWS, COUNT)
        assert not problems, problems
        for x, y in ((a, b), (b, a)):
            peer = x.peer(y.name)
            assert peer is not None
            dp = peer["dataplane"]
            assert (dp["rx_replay"], dp["rx_decrypt_fail"]) == (0, 0), dp
    finally:
        a.down()
        b.down()
