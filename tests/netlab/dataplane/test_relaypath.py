"""The UDP relay and the batched TCP / relay-over-TLS hand-over in the compiled loops
(enclave/_fp_relaypath.pxi), with static test keys between two in-process data planes.

    pa (DataPlane) --DATA(ch 7)--> pr:3478 --DATA(ch 9)--> pb (DataPlane)      relay-udp
                   <--DATA(ch 7)--         <--DATA(ch 9)--
    pa --TX batches (punt socket)--> this test --inject_frames--> pb                  tcp

pr runs a forwarder that does what the platform relay does to DATA (swap the channel, send
to the other registration); the real relay and real agents are in
tests/netlab/relay/test_fast_paths_agents.py.
"""

from __future__ import annotations

import select
import struct
import threading
from collections.abc import Callable, Iterator

import nacl.bindings as nb
import pytest

from enclave.dataplane.engine import PuntMessage
from enclave.discovery.candidates import PathAddr, Transport
from enclave.netlab import Host, Lab, Topology
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.wire import (
    MSG_DATA,
    MSG_HANDSHAKE_INIT,
    MSG_RELAY_DATA,
    Cipher,
    pack_relay_header,
)
from tests.support.overlay import (
    LOCAL_ETHERTYPE,
    PORT,
    FrameTap,
    Member,
    Overlay,
    index_of,
    overlay_mac,
    tcp_transfer,
    udp_roundtrip,
)
from tests.support.wait import wait_for

fp = pytest.importorskip("enclave._fastpath")

pytestmark = [pytest.mark.netlab, pytest.mark.root]

RELAY_PORT = 3478
CH_A, CH_B = 7, 9  # pa's channel for pb, pb's channel for pa


def data_from(ov: Overlay, a: Member, b: Member, counter: int, body: bytes) -> bytes:
    """A valid DATA packet a -> b (a's tx key, b's receive index for a) carrying a frame."""
    assert ov.cipher is Cipher.AES256_GCM
    frame = overlay_mac(b.n) + overlay_mac(a.n) + struct.pack("!H", LOCAL_ETHERTYPE) + body
    hdr = struct.pack("<B3xIQ", MSG_DATA, index_of(a.n, b.n), counter)
    return hdr + nb.crypto_aead_aes256gcm_encrypt(frame, hdr, fp.nonce_for(counter),
                                                  a.keys[b.n][0])


@pytest.fixture(params=[False, True], ids=["plain", "offload"])
def ov(request: pytest.FixtureRequest,
       lab_factory: Callable[..., Lab]) -> Iterator[Overlay]:
    lab = lab_factory(Topology(public_hosts=["pa", "pb", "pr"]))
    overlay = Overlay(lab, lab.hosts[:2], offload=request.param)
    overlay.mesh()
    yield overlay
    overlay.close()


def datagram_punted(m: Member) -> PuntMessage | None:
    """The next DATAGRAM punt message m's data plane handed Python, if any."""
    while (msg := m.dp.read_punt()) is not None:
        if msg.kind == fp.PUNT_DATAGRAM:
            return msg
    return None


def relay_of(ov: Overlay) -> Host:
    return ov.lab.hosts[2]


def relay_both(ov: Overlay) -> None:
    """Move both sessions onto the relay at pr:3478 through DataPlane.apply (the key path)."""
    a, b = ov.members
    rhost = str(relay_of(ov).ip)
    for m, peer, ch in ((a, b, CH_A), (b, a, CH_B)):
        path = PathAddr(Transport.RELAY, rhost, ch)
        m.dp.use_relay_routes({path: ((rhost, RELAY_PORT), ch)}.get)
        k_tx, k_rx = m.keys[peer.n]
        upd = ov.update_for(m, peer, tx_key=k_tx, rx_key=k_rx)
        m.dp.apply(PeerKeysUpdated(peer.name, path, upd.tx, upd.rx, upd.identity))


class Forwarder:
    """DATA(ch) from one side -> DATA(other side's ch) to the other side, as the relay does."""

    def __init__(self, host: Host, a: Member, b: Member) -> None:
        self.sock = host.socket()
        self.sock.bind((str(host.ip), RELAY_PORT))
        self.sock.settimeout(0.2)
        self.routes = {((str(a.host.ip), PORT), CH_A): ((str(b.host.ip), PORT), CH_B),
                       ((str(b.host.ip), PORT), CH_B): ((str(a.host.ip), PORT), CH_A)}
        self.headers: set[bytes] = set()
        self.forwarded = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.headers.add(data[:8])
            kind, ch = struct.unpack_from("<B3xI", data)
            to = self.routes.get((src, ch))
            if kind == MSG_RELAY_DATA and to is not None:
                self.sock.sendto(pack_relay_header(MSG_RELAY_DATA, to[1]) + data[8:], to[0])
                self.forwarded += 1

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def test_udp_relay_carries_frames_in_the_loops(ov: Overlay) -> None:
    a, b = ov.members
    relay_both(ov)
    fwd = Forwarder(relay_of(ov), a, b)
    try:
        assert udp_roundtrip(a, b, b"over the relay") == b"over the relay"
        sent, got = tcp_transfer(a, b, 4 << 20)
        assert sent == got
    finally:
        fwd.close()
    ca, cb = a.dp.peer_counters("pb"), b.dp.peer_counters("pa")
    # every DATA packet went out with pa's relay header and came back with pb's ...
    assert fwd.headers == {pack_relay_header(MSG_RELAY_DATA, CH_A),
                           pack_relay_header(MSG_RELAY_DATA, CH_B)}
    # (read while the loops may be mid-packet: the two counters of a packet may be one apart;
    # rx_frames also leaves out what CoDel dropped)
    assert ca["tx_frames"] > 0 and ca["tx_frames"] - ca["tx_relayed"] in (0, 1), ca
    assert cb["rx_frames"] > 0 and cb["rx_relayed"] >= cb["rx_frames"], cb
    assert cb["tx_relayed"] > 0 and ca["rx_relayed"] > 0  # the ACKs, the other way
    # ... and none of it through Python: nothing punted, no batch handed over
    for m in (a, b):
        g = m.dp.global_counters()
        assert g["rx_punted"] == 0 and g["tx_punt_batches"] == 0 and g["rx_injected"] == 0, g
        assert m.dp.peer_counters("pb" if m is a else "pa")["tx_via_python"] == 0
    # the relay's address stays: a relayed slot never roams
    assert a.dp.peer_addr("pb") == (str(relay_of(ov).ip), RELAY_PORT)
    if ov.members[0].dp.udp_gso:
        assert a.dp.global_counters()["gso_messages"] > 0  # runs to the relay went as GSO


def test_forged_relay_data_is_dropped_and_counted(ov: Overlay) -> None:
    a, b = ov.members
    relay_both(ov)
    r = relay_of(ov)
    tap = FrameTap(b)
    relay = r.socket()
    relay.bind((str(r.ip), RELAY_PORT))
    other = r.socket()
    other.bind((str(r.ip), RELAY_PORT + 1))
    dst = (str(b.host.ip), PORT)
    try:
        good = data_from(ov, a, b, 100, b"relayed")
        relay.sendto(pack_relay_header(MSG_RELAY_DATA, CH_B + 1) + good, dst)  # wrong channel
        other.sendto(pack_relay_header(MSG_RELAY_DATA, CH_B) + good, dst)  # wrong source
        wait_for(lambda: b.dp.peer_counters("pa")["rx_relay_forged"] == 2, 3,
                 what="forged relay DATA counted")
        assert tap.get() is None
        relay.sendto(pack_relay_header(MSG_RELAY_DATA, CH_B) + good, dst)
        got = tap.get()
        assert got is not None and got.endswith(b"relayed")
        c = b.dp.peer_counters("pa")
        assert c["rx_relayed"] == 1 and c["rx_decrypt_fail"] == 0 and c["rx_replay"] == 0
        assert "rx_relay_forged" in fp.PEER_DROP_COUNTERS
        # a handshake through the relay is Python's: punted whole, with the relay as source
        init = pack_relay_header(MSG_RELAY_DATA, CH_B) + bytes([MSG_HANDSHAKE_INIT]) + bytes(99)
        relay.sendto(init, dst)

        msg = wait_for(lambda: datagram_punted(b), 3, what="relayed handshake punted")
        assert msg is not None
        assert msg.packet == init and msg.addr == (str(r.ip), RELAY_PORT)
        assert b.dp.peer_addr("pa") == (str(r.ip), RELAY_PORT)
    finally:
        relay.close()
        other.close()


def test_relay_data_for_a_slot_on_udp_goes_to_python(ov: Overlay) -> None:
    """Until the Node moves the session onto the relay, relayed DATA is the relay client's."""
    a, b = ov.members
    r = relay_of(ov)
    relay = r.socket()
    relay.bind((str(r.ip), RELAY_PORT))
    try:
        pkt = pack_relay_header(MSG_RELAY_DATA, CH_B) + data_from(ov, a, b, 5, b"x")
        relay.sendto(pkt, (str(b.host.ip), PORT))

        msg = wait_for(lambda: datagram_punted(b), 3, what="relay DATA punted")
        assert msg is not None and msg.packet == pkt
        assert b.dp.peer_counters("pa")["rx_relay_forged"] == 0
    finally:
        relay.close()


def test_tcp_path_hands_python_batches(ov: Overlay) -> None:
    """A peer on TCP: the tx loop hands over one TX batch per flush (many packets each), the
    other side's rx loop takes them back in INJECT batches; the frames arrive intact."""
    a, b = ov.members
    k_tx, k_rx = a.keys[b.n]
    upd = ov.update_for(a, b, tx_key=k_tx, rx_key=k_rx)
    a.dp.apply(PeerKeysUpdated("pb", PathAddr(Transport.TCP, str(b.host.ip), 51820),
                               upd.tx, upd.rx, upd.identity))
    stop = threading.Event()
    batches: list[int] = []  # frames per TX batch handed to b
    late: list[int] = []  # frames per TX batch read after the transfer (not handed on)

    def carry() -> None:  # what the agent does with a TX batch: write it to the stream as is
        while not stop.is_set():
            select.select([a.dp.native.punt_socket], [], [], 0.1)
            while (m := a.dp.read_punt()) is not None:
                if m.kind == fp.PUNT_TX:
                    assert m.peer == "pb"
                    try:
                        b.dp.native.inject_frames(m.packet)
                    except OSError:  # b's punt socket full (a loaded machine): a lost batch
                        late.append(m.local_index)
                    else:
                        batches.append(m.local_index)

    t = threading.Thread(target=carry, daemon=True)
    t.start()
    try:
        sent, got = tcp_transfer(a, b, 4 << 20)
    finally:
        stop.set()
        t.join(2)
    assert sent == got
    while (m := a.dp.read_punt()) is not None:  # sealed after the transfer ended (FIN, ACKs)
        if m.kind == fp.PUNT_TX:
            late.append(m.local_index)
    ca, ga = a.dp.peer_counters("pb"), a.dp.global_counters()
    # every frame sealed for pb went to Python in a batch (or was counted as dropped)
    assert ca["tx_via_python"] == ca["tx_frames"] == (sum(batches) + sum(late)
                                                      + ga["tx_punt_dropped"])
    assert ga["tx_punt_batches"] >= len(batches) + len(late)
    assert max(batches) > 1  # batched: more than one packet per punt message
    wait_for(lambda: b.dp.global_counters()["rx_inject_msgs"] == len(batches), 3,
             what="b took every INJECT batch")
    gb = b.dp.global_counters()
    assert gb["rx_injected"] == sum(batches) and gb["rx_malformed"] == 0


def test_inject_frames_with_broken_framing(ov: Overlay) -> None:
    a, b = ov.members
    tap = FrameTap(b)
    good = data_from(ov, a, b, 1, b"first")
    framed = len(good).to_bytes(2, "big") + good
    with pytest.raises(ValueError):
        b.dp.native.inject_frames(b"\x00")
    with pytest.raises(ValueError):
        b.dp.native.inject_frames(bytes(fp.PUNT_BATCH_MAX + 1))
    b.dp.inject_frames(framed + b"\x00\x00" + framed)  # a zero length: the rest is dropped
    b.dp.inject_frames(len(good).to_bytes(2, "big") + good[:-1])  # overruns the message
    wait_for(lambda: b.dp.global_counters()["rx_malformed"] == 2, 3, what="malformed batches")
    got = tap.get()
    assert got is not None and got.endswith(b"first")
    assert tap.get() is None
    assert b.dp.global_counters()["rx_injected"] == 1
