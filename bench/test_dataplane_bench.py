"""iperf3 single-stream TCP over the compiled data plane vs the raw lab path ("overlay without
control plane": two netlab hosts, static keys, DataPlane threads in this process).

    pytest bench/test_dataplane_bench.py --benchmark-enable -s   # numbers (extra_info, printed)
    pytest bench/test_dataplane_bench.py                         # 1-second smoke of each mode
    ENCLAVE_BENCH_SECONDS=10 ...                                 # longer runs

    pa 198.18.0.11 ----veth---- inet ----veth---- pb 198.18.0.12      raw:     iperf3 on eth0
    pa enclave0 100.64.0.1  ==== UDP 51820 (AEAD) ====  pb 100.64.0.2  overlay: iperf3 on TAP

Reported (never asserted): Gbit/s received, retransmits, CPU seconds of the data-plane
threads per Gbit, UDP GSO messages / GRO datagrams, peak RSS of this process.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from enclave.netlab import Lab, Topology
from enclave.proto.wire import Cipher

fp = pytest.importorskip("enclave._fastpath")
support = pytest.importorskip("tests.dataplane.support")

pytestmark = [pytest.mark.netlab, pytest.mark.root]

SECONDS = float(os.environ.get("ENCLAVE_BENCH_SECONDS", "1"))
MODES = {
    "raw": None,
    "aes-offload": (Cipher.AES256_GCM, True),
    "aes-no-offload": (Cipher.AES256_GCM, False),
    "chacha-offload": (Cipher.CHACHA20_POLY1305, True),
    "chacha-no-offload": (Cipher.CHACHA20_POLY1305, False),
}


@pytest.fixture
def lab_factory(netlab_required: None) -> Any:
    labs: list[Lab] = []

    def make(topology: Topology) -> Lab:
        lab = Lab(topology)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture(scope="session")
def netlab_required() -> None:
    from tests.netlab.conftest import _netlab_unavailable

    reason = _netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)


def _thread_cpu() -> float:
    """CPU seconds of all threads of this process (the data-plane loops dominate)."""
    t = os.times()
    return t.user + t.system


def _iperf(client: Any, server: Any, ip: str) -> dict[str, Any]:
    srv = server.popen(["iperf3", "-s", "-1", "-B", ip], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = client.run(["iperf3", "-c", ip, "-t", str(SECONDS), "-J"], timeout=SECONDS + 30)
        out = json.loads(r.stdout)
        if "error" in out:
            raise AssertionError(f"iperf3: {out['error']}")
        return out
    finally:
        srv.wait(10)


@pytest.mark.parametrize("mode", list(MODES))
def test_iperf3_overlay_vs_raw(
    lab_factory: Callable[[Topology], Lab], benchmark: Any, mode: str
) -> None:
    lab = lab_factory(Topology(public_hosts=["pa", "pb"]))
    pa, pb = lab.hosts
    spec = MODES[mode]
    result: dict[str, Any] = {}

    def run() -> None:
        if spec is None:
            j = _iperf(pa, pb, str(pb.ip))
            result["iperf"] = j
            return
        cipher, offload = spec
        with support.Overlay(lab, [pa, pb], offload=offload, cipher=cipher) as ov:
            ov.mesh()
            a, b = ov.members
            cpu0 = _thread_cpu()
            j = _iperf(a.host, b.host, b.ip)
            result["cpu_s"] = _thread_cpu() - cpu0
            result["iperf"] = j
            result["ga"] = a.dp.global_counters()
            result["gb"] = b.dp.global_counters()
            result["cb"] = b.dp.peer_counters("pa")

    benchmark.pedantic(run, rounds=1, iterations=1)
    end = result["iperf"]["end"]
    gbit = end["sum_received"]["bits_per_second"] / 1e9
    info = benchmark.extra_info
    info["gbit_s"] = round(gbit, 2)
    info["retransmits"] = end["sum_sent"].get("retransmits")
    info["seconds"] = SECONDS
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if spec is not None:
        info["dataplane_cpu_s_per_gbit"] = round(result["cpu_s"] / max(gbit * SECONDS, 1e-9), 3)
        info["gso_messages"] = result["ga"]["gso_messages"]
        info["gro_datagrams"] = result["gb"]["rx_gro_datagrams"]
        # correctness, not speed: the stream crossed without authentication failures
        assert result["cb"]["rx_decrypt_fail"] == 0 and result["cb"]["rx_replay"] == 0
        assert result["cb"]["rx_frames"] > 0
    assert gbit > 0
    print(f"\n{mode}: {info}")
