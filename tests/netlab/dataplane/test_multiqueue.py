"""The data plane with several workers (a multi-queue TAP and SO_REUSEPORT sockets): every
datagram delivered once and in order within its flow, the TAP has one queue per worker, and
one worker (threads = 1) still works.

    lab: public hosts hub, s1, s2, s3; the static-key overlay (tests/support/overlay.py) with
    `threads` workers in every member, all four meshed

    s1, s2, s3 --FLOWS flows each--> hub     rx on the hub: one worker per spoke (the
                                             kernel's 4-tuple hash picks the socket)
    hub --FLOWS flows to each spoke--> s*    tx on the hub: flows spread over its TAP queues,
                                             all workers sealing with the same key per spoke
                                             (the counter is reserved atomically: a reused
                                             nonce would show as a replay drop)

Throughput with several workers is a speed figure: `enclave bench --threads` and
docs/PERFORMANCE.md ("Many cores"), not a threshold here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from enclave.netlab import Lab, Topology
from tests.support.iperf import NEEDS_IPERF3, iperf3_client, iperf3_end, iperf3_server
from tests.support.overlay import Member, Overlay, tcp_transfer, udp_roundtrip
from tests.support.seqflows import SeqReceiver, faults, send_flows

pytestmark = [pytest.mark.netlab, pytest.mark.root]

FLOWS = 8
COUNT = 250
PORT = 7100
IPERF_PORT = 5298


def tap_queues(m: Member) -> tuple[int, int]:
    """(tx, rx) queues of the member's TAP as the kernel lists them in sysfs."""
    res = m.host.run(["ls", "/sys/class/net/enclave0/queues"], check=True)
    names = res.stdout.split()
    return (sum(1 for n in names if n.startswith("tx-")),
            sum(1 for n in names if n.startswith("rx-")))


def drop_counters(m: Member, peers: list[Member]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in peers:
        c = m.dp.peer_counters(p.name)
        for key in ("rx_replay", "rx_decrypt_fail", "tx_key_limit", "tx_send_errors"):
            out[key] = out.get(key, 0) + c[key]
    return out


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_datagram_once_and_in_order(lab_factory: Callable[..., Lab], threads: int) -> None:
    lab = lab_factory(Topology(public_hosts=["hub", "s1", "s2", "s3"]))
    with Overlay(lab, lab.hosts, threads=threads) as ov:
        ov.mesh()
        hub, *spokes = ov.members
        for m in ov.members:
            assert m.dp.native.workers == threads
            assert tap_queues(m) == (threads, threads)
        for s in spokes:                      # ARP both ways before the paced flows start
            udp_roundtrip(s, hub, b"warm")
            udp_roundtrip(hub, s, b"warm")
        receivers = {m.n: SeqReceiver(m.host, m.ip, PORT) for m in ov.members}
        try:
            jobs = [threading.Thread(target=send_flows, args=(s.host, hub.ip, PORT),
                                     kwargs={"tag": s.n, "flows": FLOWS, "count": COUNT})
                    for s in spokes]
            jobs += [threading.Thread(target=send_flows, args=(hub.host, s.ip, PORT),
                                      kwargs={"tag": hub.n, "flows": FLOWS, "count": COUNT})
                     for s in spokes]
            for j in jobs:
                j.start()
            for j in jobs:
                j.join(60)
            receivers[hub.n].settle(len(spokes) * FLOWS * COUNT)
            for s in spokes:
                receivers[s.n].settle(FLOWS * COUNT)
        finally:
            for r in receivers.values():
                r.close()
        problems = faults(receivers[hub.n].got, [s.n for s in spokes], FLOWS, COUNT)
        for s in spokes:
            problems += [f"at {s.name}: {p}"
                         for p in faults(receivers[s.n].got, [hub.n], FLOWS, COUNT)]
        assert not problems, problems
        for m in ov.members:
            others = [p for p in ov.members if p is not m]
            assert drop_counters(m, others) == {"rx_replay": 0, "rx_decrypt_fail": 0,
                                                "tx_key_limit": 0, "tx_send_errors": 0}
        # the hub's workers learned the spokes' MACs (one shared table): its flows to them
        # went unicast; unlearned, each of its 3 x FLOWS x COUNT datagrams would have flooded
        assert hub.dp.global_counters()["tx_flooded"] < FLOWS * COUNT
        work = hub.dp.native.worker_counters()
        assert len(work) == threads
        assert sum(w["tap_reads"] for w in work) == hub.dp.global_counters()["tap_reads"]
        if threads > 1:
            # 24 one-way flows from the hub: the tun driver's flow hash spread them over queues
            busy = [i for i, w in enumerate(work) if w["tap_reads"] > 0]
            assert len(busy) >= 2, work


@NEEDS_IPERF3
@pytest.mark.parametrize("threads", [2, 4])
def test_parallel_tcp_streams(lab_factory: Callable[..., Lab], threads: int) -> None:
    """iperf3 -P 4 both ways at once completes, and a TCP transfer beside it arrives intact;
    no packet is refused as a replay (what a reused or reordered-beyond-the-window counter of
    the shared tx key would cause); the streams of the one peer stayed on one worker."""
    lab = lab_factory(Topology(public_hosts=["pa", "pb"]))
    with Overlay(lab, lab.hosts, threads=threads) as ov:
        ov.mesh()
        a, b = ov.members
        udp_roundtrip(a, b, b"warm")
        with iperf3_server(b.host, b.ip, IPERF_PORT):
            client = iperf3_client(a.host, b.ip, IPERF_PORT, "-P", "4", "-t", "2", "--bidir")
            sent, got = tcp_transfer(a, b, 4 << 20)
            end = iperf3_end(client, 60)
        assert end["sum_received"]["bytes"] > 0
        assert sent == got
        for m, peer in ((a, b), (b, a)):
            assert drop_counters(m, [peer]) == {"rx_replay": 0, "rx_decrypt_fail": 0,
                                                "tx_key_limit": 0, "tx_send_errors": 0}
            # one peer: its datagrams reach one socket, and the tun driver reads every flow
            # from the queue its replies were written to, so one worker carried the streams
            # (a flow's first packets, before any reply, may be read elsewhere)
            reads = [w["tap_reads"] for w in m.dp.native.worker_counters()]
            assert max(reads) >= 0.95 * sum(reads), reads
