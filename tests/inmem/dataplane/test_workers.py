"""The compiled DataPlane with several workers, over socketpairs and loopback UDP (no TAP,
no root): every worker's tx thread seals for the same peer with the one shared key, and no
counter (the AEAD nonce) is ever used twice; the workers' counters add up; two rx threads
racing on one receive key's replay window let each packet through once.

    TAP queue 0 (socketpair) --[tx 0]--> udp 0 --.
    TAP queue 1 (socketpair) --[tx 1]--> udp 1 --+--> receiver (loopback): counters seen
    ...                                          '
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from enclave.proto.keys import SessionKeys
from enclave.proto.wire import Cipher
from tests.support.fd_tap import workers_dataplane
from tests.support.wait import wait_for

fp = pytest.importorskip("enclave._fastpath")

PEER_MAC = bytes([2, 0, 0, 0, 0, 2])
KEY = bytes(range(32))
FRAMES = 3000  # per worker


@dataclass
class Rig:
    native: fp.DataPlane
    taps: list[socket.socket]      # our ends of the TAP stand-ins, one per worker
    receiver: socket.socket


@pytest.fixture(params=[2, 4], ids=["2-workers", "4-workers"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    with workers_dataplane(request.param, max_peers=4) as (native, taps, _udps), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(0.5)
        tx = SessionKeys(11, 22, KEY, KEY, Cipher.CHACHA20_POLY1305)
        native.install(0, tx, (tx,), peer_mac=PEER_MAC, addr=receiver.getsockname())
        yield Rig(native, taps, receiver)


def frame(worker: int, seq: int) -> bytes:
    """An Ethernet frame to the peer's MAC (unknown to the switch: flooded to the one peer)."""
    return PEER_MAC + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + struct.pack("!HI", worker, seq) \
        + bytes(40)


def test_workers_share_one_key_and_never_reuse_a_counter(rig: Rig) -> None:
    native = rig.native
    assert native.workers == len(rig.taps)
    native.start()
    counters: list[int] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set() or len(counters) < FRAMES * len(rig.taps):
            try:
                pkt = rig.receiver.recv(65536)
            except TimeoutError:
                if done.is_set():
                    return
                continue
            counters.append(struct.unpack_from("<Q", pkt, 8)[0])

    def write(k: int) -> None:
        for seq in range(FRAMES):
            while True:
                try:
                    rig.taps[k].send(frame(k, seq))
                    break
                except BlockingIOError:
                    time.sleep(0.0005)

    rx = threading.Thread(target=receive)
    rx.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in range(len(rig.taps))]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    deadline = time.monotonic() + 10
    total = FRAMES * len(rig.taps)
    while native.counters(0)["tx_frames"] < total and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    done.set()
    rx.join(10)
    native.stop()
    c = native.counters(0)
    assert c["tx_frames"] == total                       # summed over the workers
    assert c["tx_counter"] == total                      # the shared key handed out each once
    assert len(counters) == len(set(counters)), "a counter (nonce) was used twice"
    assert set(counters) <= set(range(total))
    work = native.worker_counters()
    assert [w["tap_reads"] for w in work] == [FRAMES] * len(rig.taps)
    assert native.global_counters()["tap_reads"] == total


def test_queues_are_checked() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError):
            fp.DataPlane(a.fileno(), b.fileno(), queues=[(-1, b.fileno())])
        with pytest.raises(ValueError):
            fp.DataPlane(a.fileno(), b.fileno(),
                         queues=[(a.fileno(), b.fileno())] * fp.DATAPLANE_MAX_WORKERS)
        one = fp.DataPlane(a.fileno(), b.fileno())
        assert one.workers == 1 and one.global_counters()["workers"] == 1
        one.close()
    finally:
        a.close()
        b.close()


RX_MAC = bytes([2, 0, 0, 0, 0, 1])
DUPS = 150  # datagrams queued twice each: well inside default socket buffers


def sealed_datagrams(count: int) -> list[bytes]:
    """`count` DATA datagrams sealed by a one-worker data plane with KEY (receiver index 22)."""
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    cap.bind(("127.0.0.1", 0))
    cap.settimeout(2)
    theirs.setblocking(False)
    udp.setblocking(False)
    sender = fp.DataPlane(theirs.fileno(), udp.fileno(), max_peers=2, aqm=False)
    tx = SessionKeys(11, 22, KEY, KEY, Cipher.CHACHA20_POLY1305)
    sender.install(0, tx, (tx,), peer_mac=RX_MAC, addr=cap.getsockname())
    sender.start()
    out = []
    try:
        for seq in range(count):
            # from the receiver's peer (PEER_MAC), a custom EtherType: the MAC rule only
            ours.send(RX_MAC + PEER_MAC + b"\x88\xb5" + struct.pack("!I", seq) + bytes(40))
            out.append(cap.recv(65536))
    finally:
        sender.close()
        for s in (theirs, ours, udp, cap):
            s.close()
    return out


def test_two_rx_workers_take_each_counter_once() -> None:
    """The same datagrams queued on both workers' sockets before they start: the two rx
    threads race on one receive key's replay window, and every frame reaches the TAP once."""
    dgrams = sealed_datagrams(DUPS)
    assert len({struct.unpack_from("<Q", d, 8)[0] for d in dgrams}) == DUPS
    with workers_dataplane(2, max_peers=2) as (native, taps, udps), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as src:
        rx = SessionKeys(22, 11, KEY, KEY, Cipher.CHACHA20_POLY1305)
        native.install(0, None, (rx,), peer_mac=PEER_MAC)
        for d in dgrams:                    # both copies queued before either thread runs
            src.sendto(d, udps[0].getsockname())
            src.sendto(d, udps[1].getsockname())
        native.start()
        wait_for(lambda: native.counters(0)["rx_frames"] + native.counters(0)["rx_replay"]
                 >= 2 * DUPS, 10, what="both copies of every datagram taken")
        native.stop()
        seqs = []
        for ours in taps:
            ours.setblocking(False)
            while True:
                try:
                    f = ours.recv(65536)
                except BlockingIOError:
                    break
                seqs.append(struct.unpack_from("!I", f, 14)[0])
        c = native.counters(0)
        assert (c["rx_frames"], c["rx_replay"], c["rx_decrypt_fail"]) == (DUPS, DUPS, 0)
        assert sorted(seqs) == list(range(DUPS))          # every frame once, none twice
        work = native.worker_counters()
        assert [w["rx_datagrams"] for w in work] == [DUPS, DUPS]
