"""The data plane's AQM (CoDel + ECN, enclave/_fp_aqm.pxi) acts on a real bulk flow and an
interactive flow beside it keeps getting answers.

Two lab hosts with the static-key overlay (tests/support/overlay.py); iperf3 saturates a -> b
while a UDP echo "interactive" flow runs beside it. CoDel's target and interval are set very
low here (100 us / 5 ms, DataPlane.tune) so that any queue a saturating stream builds on this
shared 2-core machine counts as standing: the test checks behaviour, not speed. What it asserts:
  - ECN-capable TCP (tcp_ecn=1 both ends): the AQM marks CE (aqm_marks > 0) and drops nothing
    of that flow; the bulk flow completes
  - Not-ECT TCP (tcp_ecn=0): the AQM drops early (aqm_drops > 0) and the flow still completes
  - --no-aqm (aqm=False): under the same load neither counter moves (the kill switch)
  - the interactive flow is answered throughout, in every case
RTT figures (idle vs under load, with and without the AQM, default target/interval) are speed
figures: they come from `enclave bench` (docs/PERFORMANCE.md), not from a test threshold.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from enclave.netlab import Lab, Topology
from tests.support.iperf import NEEDS_IPERF3, iperf3_client, iperf3_end, iperf3_server
from tests.support.overlay import Member, Overlay

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.root,
    NEEDS_IPERF3,
]

ECHO_PORT = 7007
IPERF_PORT = 5299
SECONDS = 3


def interactive(a: Member, b: Member, stop: threading.Event) -> list[int]:
    """Small UDP echoes a -> b every 5 ms until `stop`; the sequence numbers answered."""
    srv = b.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((b.ip, ECHO_PORT))
    srv.settimeout(0.2)
    cl = a.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cl.settimeout(0.5)
    done = threading.Event()
    answered: list[int] = []

    def echo() -> None:
        while not done.is_set():
            try:
                data, addr = srv.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            srv.sendto(data, addr)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    try:
        seq = 0
        while not stop.is_set():
            cl.sendto(seq.to_bytes(4, "big") + bytes(60), (b.ip, ECHO_PORT))
            try:
                got = cl.recv(2048)
                answered.append(int.from_bytes(got[:4], "big"))
            except TimeoutError:
                pass
            seq += 1
            time.sleep(0.005)
    finally:
        done.set()
        t.join(5)
        srv.close()
        cl.close()
    return answered


def bulk_beside_interactive(lab: Lab, *, aqm: bool, ecn: bool) -> tuple[dict, dict, int, list]:
    """(a's and b's global counters, bytes iperf3 delivered, echoes answered under load)."""
    with Overlay(lab, lab.hosts, aqm=aqm) as ov:
        a, b = ov.members
        for m in ov.members:
            m.dp.native.stop()
            m.dp.native.tune(aqm_target_us=100, aqm_interval_us=5000)
            m.dp.native.start()
            m.host.run(["sysctl", "-qw", f"net.ipv4.tcp_ecn={1 if ecn else 0}"], check=True)
        ov.mesh()
        with iperf3_server(b.host, b.ip, IPERF_PORT):
            client = iperf3_client(a.host, b.ip, IPERF_PORT, "-t", str(SECONDS))
            stop = threading.Event()
            box: dict[str, list[int]] = {}
            pinger = threading.Thread(target=lambda: box.update(r=interactive(a, b, stop)))
            pinger.start()
            try:
                end = iperf3_end(client, SECONDS + 30)
            finally:
                stop.set()
                pinger.join(10)
        delivered = int(end["sum_received"]["bytes"])
        return a.dp.global_counters(), b.dp.global_counters(), delivered, box.get("r", [])


@pytest.mark.parametrize("ecn", [True, False], ids=["ecn", "not-ect"])
def test_aqm_acts_on_a_bulk_flow(lab_factory: Callable[..., Lab], ecn: bool) -> None:
    lab = lab_factory(Topology(public_hosts=["pa", "pb"]))
    ga, gb, delivered, answered = bulk_beside_interactive(lab, aqm=True, ecn=ecn)
    assert ga["aqm"] and gb["aqm"]
    marks = ga["aqm_marks"] + gb["aqm_marks"]
    drops = ga["aqm_drops"] + gb["aqm_drops"]
    if ecn:
        assert marks > 0, (ga, gb)
    else:
        assert drops > 0, (ga, gb)
        assert marks == 0                       # nothing in this run was ECN-capable
    assert delivered > 0
    assert answered, "the interactive flow got no answer beside the bulk flow"
    assert answered == sorted(answered)


def test_no_aqm_is_a_kill_switch(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(Topology(public_hosts=["pa", "pb"]))
    ga, gb, delivered, answered = bulk_beside_interactive(lab, aqm=False, ecn=True)
    assert not ga["aqm"] and not gb["aqm"]
    assert (ga["aqm_marks"], ga["aqm_drops"], gb["aqm_marks"], gb["aqm_drops"]) == (0, 0, 0, 0)
    assert delivered > 0 and answered
