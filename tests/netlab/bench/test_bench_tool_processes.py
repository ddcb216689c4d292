"""The bench's measuring tools that drive real processes on loopback: the udpgen subprocess
flow, iperf3 (when installed), and procstat reading another process's CPU time and peak RSS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from enclave.bench import flows, procstat
from enclave.localport import free_port


def test_udp_rate_flow_through_subprocesses() -> None:
    place = flows.LocalPlace()
    try:
        res = flows.udp_rate(place, place, "127.0.0.1", size=200, duration=0.5, port=_free_udp())
    finally:
        place.close()
    assert res.sent > 0 and 0 < res.received <= res.sent
    assert 0.0 <= res.loss_pct < 100.0
    assert res.receiver_pps > 0 and res.receiver_gbit_s == pytest.approx(
        res.receiver_pps * 200 * 8 / 1e9)


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")


@pytest.fixture
def iperf3_server() -> Iterator[int]:
    place = flows.LocalPlace()
    port = free_port()
    flows.start_iperf3_server(place, port)
    try:
        yield port
    finally:
        place.close()


@needs_iperf3
@pytest.mark.parametrize(("streams", "reverse"), [(1, False), (2, True)])
def test_iperf3_real_output_parses(iperf3_server: int, streams: int, reverse: bool) -> None:
    place = flows.LocalPlace()
    res = flows.tcp_throughput(place, "127.0.0.1", duration=1, streams=streams, reverse=reverse,
                               port=iperf3_server)
    assert res.streams == streams and res.reverse is reverse
    assert res.receiver_bytes > 0 and 0.5 < res.seconds < 3
    assert res.gbit_s == pytest.approx(res.receiver_bytes * 8 / res.seconds / 1e9, rel=0.05)
    assert res.sender_bps > 0 and res.retransmits is not None and res.retransmits >= 0


@needs_iperf3
def test_iperf3_error_output_is_a_flow_error() -> None:
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(free_port()), "-t", "1",
                          "--json"], capture_output=True, text=True, timeout=30).stdout
    with pytest.raises(flows.FlowError, match=r"iperf3: .*connect"):
        flows.parse_iperf3(out)
    with pytest.raises(flows.FlowError, match="no JSON"):
        flows.parse_iperf3("iperf3: error - unable to connect")
    with pytest.raises(flows.FlowError, match="sum_received"):
        flows.parse_iperf3('{"start": {}, "end": {"sum": {}}}')  # a UDP-shaped result


def test_procstat_cpu_and_peak_rss() -> None:
    code = ("import time; b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096]);"
            "t = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
            "print('done', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        assert procstat.cpu_seconds(proc.pid) >= 0.3
        rss = procstat.peak_rss_bytes(proc.pid)
        assert rss is not None and rss >= 64 * 2**20
        assert proc.pid in procstat.descendants(proc.pid)
    finally:
        proc.kill()
        proc.wait(5)
    assert procstat.cpu_seconds(proc.pid) == 0.0 and procstat.peak_rss_bytes(proc.pid) is None
