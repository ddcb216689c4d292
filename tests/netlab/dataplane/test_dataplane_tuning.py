"""DataPlane.tune(): the batching knobs (validation, only while stopped) and that the loops stay
correct at the extremes (one datagram per sendmmsg, one per recvmmsg) over real netlab hosts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from enclave.netlab import Lab, Topology
from tests.support.fd_tap import socketpair_dataplane
from tests.support.overlay import Overlay, tcp_transfer

fp = pytest.importorskip("enclave._fastpath")


@pytest.fixture
def native() -> Iterator[fp.DataPlane]:
    with socketpair_dataplane(max_peers=2) as dp:
        yield dp


def test_tune_defaults_and_changes(native: fp.DataPlane) -> None:
    d = native.tune()
    assert d["tx_flush_frames"] >= 64 and d["tx_flush_bytes"] >= 65536 and d["rx_batch"] == 0
    assert native.tune(tx_flush_frames=8, rx_batch=2) == {**d, "tx_flush_frames": 8, "rx_batch": 2}
    assert native.tune(tx_flush_bytes=4096)["tx_flush_bytes"] == 4096


@pytest.mark.parametrize(
    "kw",
    [
        {"tx_flush_frames": 0},
        {"tx_flush_frames": 100_000},
        {"tx_flush_bytes": 0},
        {"tx_flush_bytes": 1 << 30},
        {"rx_batch": -1},
        {"rx_batch": 65},
    ],
)
def test_tune_rejects_out_of_range(native: fp.DataPlane, kw: dict[str, int]) -> None:
    before = native.tune()
    with pytest.raises(ValueError):
        native.tune(**kw)
    assert native.tune() == before


def test_tune_refused_while_running(native: fp.DataPlane) -> None:
    native.start()
    with pytest.raises(RuntimeError):
        native.tune(rx_batch=1)
    native.stop()
    assert native.tune(rx_batch=1)["rx_batch"] == 1


@pytest.mark.netlab
@pytest.mark.root
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_one_datagram_per_syscall_still_carries_tcp(
    lab_factory: Callable[..., Lab], offload: bool
) -> None:
    lab = lab_factory(Topology(public_hosts=["pa", "pb"]))
    with Overlay(lab, lab.hosts, offload=offload) as ov:
        for m in ov.members:
            m.dp.native.stop()
            m.dp.native.tune(tx_flush_frames=1, rx_batch=1)
            m.dp.native.start()
        ov.mesh()
        a, b = ov.members
        sent, got = tcp_transfer(a, b, 1 << 20)
        assert sent == got
        ga, gb = a.dp.global_counters(), b.dp.global_counters()
        # every TAP read was flushed on its own: at least one sendmmsg per read
        assert ga["sendmmsg_calls"] >= ga["tap_reads"] > 0
        # one datagram (or GRO buffer) per recvmmsg: rounds cover every datagram
        assert gb["rx_rounds"] >= gb["rx_datagrams"] > 0
        assert b.dp.peer_counters("pa")["rx_decrypt_fail"] == 0
