"""Hostile and edge-case input to the compiled data plane, crafted with the static test keys.

pc (or a second socket on pa)  --crafted DATA / handshake / garbage-->  pb:51820
pb's AF_PACKET socket on enclave0 shows what reached the TAP; counters show what did not.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import nacl.bindings as nb
import pytest

from enclave.dataplane.engine import PuntMessage
from enclave.discovery.candidates import PathAddr, Transport
from enclave.netlab import Lab, Topology
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.keys import SessionKeys
from enclave.proto.wire import MSG_DATA, MSG_HANDSHAKE_INIT, Cipher
from tests.support.overlay import (
    LOCAL_ETHERTYPE,
    PORT,
    FrameTap,
    Member,
    Overlay,
    frame_socket,
    index_of,
    member_identity,
    overlay_mac,
    udp_roundtrip,
)
from tests.support.wait import wait_for

fp = pytest.importorskip("enclave._fastpath")

pytestmark = [pytest.mark.netlab, pytest.mark.root]



@pytest.fixture
def ov(lab_factory: Callable[..., Lab]) -> Iterator[Overlay]:
    lab = lab_factory(Topology(public_hosts=["pa", "pb", "pc"]))
    overlay = Overlay(lab, lab.hosts[:2], offload=False)
    overlay.mesh()
    yield overlay
    overlay.close()


def seal(key: bytes, index: int, counter: int, frame: bytes, cipher: Cipher) -> bytes:
    hdr = struct.pack("<B3xIQ", MSG_DATA, index, counter)
    nonce = fp.nonce_for(counter)
    if cipher is Cipher.AES256_GCM:
        return hdr + nb.crypto_aead_aes256gcm_encrypt(frame, hdr, nonce, key)
    return hdr + nb.crypto_aead_chacha20poly1305_ietf_encrypt(frame, hdr, nonce, key)


def frame_to(dst: Member, src_mac: bytes, body: bytes) -> bytes:
    return overlay_mac(dst.n) + src_mac + struct.pack("!H", LOCAL_ETHERTYPE) + body


def sender(m: Member, port: int = 0) -> socket.socket:
    s = m.host.socket()
    s.bind((str(m.host.ip), port))
    return s


def data_from(ov: Overlay, a: Member, b: Member, counter: int, body: bytes, **kw: bytes) -> bytes:
    """A valid DATA packet a -> b (a's tx key, b's receive index for a)."""
    src = kw.get("src_mac", overlay_mac(a.n))
    return seal(a.keys[b.n][0], index_of(a.n, b.n), counter, frame_to(b, src, body), ov.cipher)


def test_replay_and_too_old_counters_are_dropped(ov: Overlay) -> None:
    a, b = ov.members
    tap = FrameTap(b)
    s = sender(a, 40001)
    dst = (str(b.host.ip), PORT)
    pkt = data_from(ov, a, b, 10_000, b"first")
    s.sendto(pkt, dst)
    assert tap.get() is not None and tap.get() is None
    s.sendto(pkt, dst)  # exact replay
    s.sendto(data_from(ov, a, b, 10_000 - 9000, b"too old"), dst)  # beyond the 8128 window
    s.sendto(data_from(ov, a, b, 9_999, b"late but fresh"), dst)
    got = tap.get()
    assert got is not None and got.endswith(b"late but fresh")
    assert tap.get() is None
    c = b.dp.peer_counters("pa")
    assert c["rx_replay"] == 2
    assert c["rx_decrypt_fail"] == 0


def test_forged_malformed_and_unknown_packets(ov: Overlay) -> None:
    a, b = ov.members
    attacker = ov.lab.hosts[2]
    s = attacker.socket()
    s.bind((str(attacker.ip), 40002))
    dst = (str(b.host.ip), PORT)
    good = bytearray(data_from(ov, a, b, 5, b"payload"))
    forged = bytes(good[:-1]) + bytes([good[-1] ^ 1])  # tag flipped
    s.sendto(forged, dst)
    reserved = bytes(good[:1]) + b"\x01" + bytes(good[2:])
    s.sendto(reserved, dst)
    s.sendto(bytes(good[:40]), dst)  # shorter than header + Ethernet header + tag
    unknown = struct.pack("<B3xIQ", MSG_DATA, 0xDEADBEEF, 1) + bytes(64)
    s.sendto(unknown, dst)
    init = bytes([MSG_HANDSHAKE_INIT, 0, 0, 0]) + b"not really a handshake"
    s.sendto(init, dst)
    s.sendto(b"", dst)
    wait_for(lambda: b.dp.global_counters()["rx_datagrams"] >= 6, 3, what="6 datagrams")
    punted: list[PuntMessage] = []

    # the rx thread counts a datagram as it takes it, then handles it: the last one's punt
    # may come after the count
    def punted_datagrams() -> list[PuntMessage]:
        while (msg := b.dp.read_punt()) is not None:
            punted.append(msg)
        got = [m for m in punted if m.kind == fp.PUNT_DATAGRAM]
        return got if len(got) >= 3 else []

    datagrams = wait_for(punted_datagrams, 10, what="3 DATAGRAM punts")
    c = b.dp.peer_counters("pa")
    g = b.dp.global_counters()
    assert c["rx_decrypt_fail"] == 1
    assert c["rx_runt"] == 1
    assert c["rx_frames"] == 0
    assert g["rx_malformed"] == 1
    assert g["rx_unknown_index"] == 1
    assert [m.packet for m in datagrams] == [unknown, init, b""]
    assert all(m.addr == (str(attacker.ip), 40002) for m in datagrams)
    # nothing bad moved the peer's address
    assert b.dp.peer_addr("pa") == (str(a.host.ip), PORT)


def test_spoofed_source_mac_dropped_unless_bridging(ov: Overlay) -> None:
    a, b = ov.members
    tap = FrameTap(b)
    s = sender(a)
    dst = (str(b.host.ip), PORT)
    other = bytes([2, 0, 0, 0, 0, 0x99])
    s.sendto(data_from(ov, a, b, 1, b"spoof", src_mac=other), dst)
    s.sendto(data_from(ov, a, b, 2, b"group src", src_mac=b"\x03" + other[1:]), dst)
    assert tap.get() is None
    assert b.dp.peer_counters("pa")["rx_spoofed"] == 2
    # a gateway (certificate allows bridging) may carry other MACs, never group sources
    k_tx, k_rx = b.keys[a.n]
    b.dp.apply(ov.update_for(b, a, tx_key=k_tx, rx_key=k_rx, bridging=True))
    s.sendto(data_from(ov, a, b, 3, b"bridged", src_mac=other), dst)
    s.sendto(data_from(ov, a, b, 4, b"group src", src_mac=b"\x03" + other[1:]), dst)
    got = tap.get()
    assert got is not None and got[6:12] == other and got.endswith(b"bridged")
    assert tap.get() is None
    assert b.dp.peer_counters("pa")["rx_spoofed"] == 3


def test_roaming_follows_the_newest_authentic_packet(ov: Overlay) -> None:
    a, b = ov.members
    dst = (str(b.host.ip), PORT)
    s1 = sender(a, 41000)
    s1.sendto(data_from(ov, a, b, 100, b"from a new port"), dst)
    wait_for(lambda: b.dp.peer_addr("pa") == (str(a.host.ip), 41000), 3, what="roam to :41000")
    punts: list[PuntMessage] = []

    def roamed() -> list[PuntMessage]:  # (the rx thread moves the address, then punts the news)
        while (m := b.dp.read_punt()) is not None:
            punts.append(m)
        return [m for m in punts if m.kind == fp.PUNT_ROAMED]

    roams = wait_for(roamed, 10, what="the ROAMED punt")
    assert len(roams) == 1 and roams[0].peer == "pa" and roams[0].addr == (str(a.host.ip), 41000)
    # an older (but fresh) counter from elsewhere is delivered, yet does not move the peer
    s2 = sender(a, 41001)
    s2.sendto(data_from(ov, a, b, 50, b"older"), dst)
    wait_for(lambda: b.dp.peer_counters("pa")["rx_frames"] >= 2, 3, what="second frame")
    assert b.dp.peer_addr("pa") == (str(a.host.ip), 41000)
    # a forged packet from another address moves nothing
    s3 = sender(a, 41002)
    s3.sendto(data_from(ov, a, b, 200, b"x")[:-1] + b"\0", dst)
    wait_for(lambda: b.dp.peer_counters("pa")["rx_decrypt_fail"] >= 1, 3, what="forgery counted")
    assert b.dp.peer_addr("pa") == (str(a.host.ip), 41000)
    assert b.dp.peer_counters("pa")["roamed"] == 1


def test_tx_key_limit_stops_using_the_key(ov: Overlay) -> None:
    a, b = ov.members
    slot = a.dp._slots["pb"]
    k_tx, k_rx = a.keys[b.n]
    ia, ib = index_of(b.n, a.n), index_of(a.n, b.n)
    k = SessionKeys(ia, ib, k_rx, k_tx, Cipher.AES256_GCM)
    a.dp.native.install(
        slot, k, [k], peer_mac=overlay_mac(b.n), addr=(str(b.host.ip), PORT), tx_limit=3
    )
    tx = frame_socket(a)
    for i in range(6):
        tx.send(frame_to(b, overlay_mac(a.n), b"frame %d" % i))
    wait_for(lambda: a.dp.peer_counters("pb")["tx_key_limit"] >= 3, 3, what="key limit drops")
    c = a.dp.peer_counters("pb")
    assert c["tx_frames"] == 3 and c["tx_counter"] == 3


def test_rekey_under_traffic_loses_nothing(ov: Overlay) -> None:
    """Node-style rekey (rx key first, then tx switch, then old rx dropped) mid-stream."""
    a, b = ov.members
    rs = b.host.socket()
    rs.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE: read after the stream
    rs.bind((b.ip, 5100))
    rs.settimeout(1)
    ss = a.host.socket()
    udp_roundtrip(a, b, b"warm up ARP", port=5101)
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        while not stop.is_set():
            ss.sendto(b"%08d" % sent[0], (b.ip, 5100))
            sent[0] += 1
            time.sleep(0.0005)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    old_ab, old_ba = a.keys[b.n]
    old_ia, old_ib = index_of(b.n, a.n), index_of(a.n, b.n)
    cipher = ov.cipher
    for gen in range(1, 6):
        new_ab, new_ba = bytes([gen]) * 32, bytes([gen + 100]) * 32
        ia, ib = 0x10000 * gen + 1, 0x10000 * gen + 2
        mk = SessionKeys
        # b: receive on the new key (pending), keep sending/receiving on the old one
        b_old = mk(old_ib, old_ia, old_ab, old_ba, cipher)
        b_new = mk(ib, ia, new_ab, new_ba, cipher)
        a_old = mk(old_ia, old_ib, old_ba, old_ab, cipher)
        a_new = mk(ia, ib, new_ba, new_ab, cipher)
        b_addr, a_addr = (str(a.host.ip), PORT), (str(b.host.ip), PORT)
        id_a, id_b = member_identity(a), member_identity(b)
        b.dp.apply(PeerKeysUpdated("pa", b_addr, b_old, (b_old, b_new), id_a))
        time.sleep(0.02)
        a.dp.apply(PeerKeysUpdated("pb", a_addr, a_new, (a_new, a_old), id_b))
        time.sleep(0.02)
        b.dp.apply(PeerKeysUpdated("pa", b_addr, b_new, (b_new, b_old), id_a))
        time.sleep(0.02)
        b.dp.apply(PeerKeysUpdated("pa", b_addr, b_new, (b_new,), id_a))
        a.dp.apply(PeerKeysUpdated("pb", a_addr, a_new, (a_new,), id_b))
        old_ab, old_ba, old_ia, old_ib = new_ab, new_ba, ia, ib
        time.sleep(0.02)
    time.sleep(0.05)
    stop.set()
    t.join(5)
    got = set()
    while True:
        try:
            got.add(int(rs.recv(100)))
        except TimeoutError:
            break
    assert len(got) == sent[0]
    c = b.dp.peer_counters("pa")
    assert c["rx_decrypt_fail"] == 0 and c["rx_replay"] == 0
    assert b.dp.global_counters()["rx_unknown_index"] == 0
    # retired keys and snapshots were all freed once the threads moved on
    wait_for(lambda: a.dp.native.reclaim() == 0 and b.dp.native.reclaim() == 0, 3, what="reclaim")


def test_reinstalling_the_same_key_keeps_its_counter(ov: Overlay) -> None:
    a, b = ov.members
    udp_roundtrip(a, b, b"one")
    before = a.dp.peer_counters("pb")["tx_counter"]
    k_tx, k_rx = a.keys[b.n]
    a.dp.apply(ov.update_for(a, b, tx_key=k_tx, rx_key=k_rx))
    assert a.dp.peer_counters("pb")["tx_counter"] == before
    udp_roundtrip(a, b, b"two", port=5003)
    assert b.dp.peer_counters("pa")["rx_replay"] == 0


def test_non_udp_path_goes_through_python_and_inject(ov: Overlay) -> None:
    """TCP/relay path: C seals and punts (TX); the other side's Python injects it."""
    a, b = ov.members
    k_tx, k_rx = a.keys[b.n]
    upd = ov.update_for(a, b, tx_key=k_tx, rx_key=k_rx)
    tcp = PathAddr(Transport.TCP, str(b.host.ip), 51820)
    a.dp.apply(PeerKeysUpdated("pb", tcp, upd.tx, upd.rx, upd.identity))
    tap = FrameTap(b)
    tx = frame_socket(a)
    frame = frame_to(b, overlay_mac(a.n), b"via python path")
    tx.send(frame)

    def tx_punt() -> object:
        while (m := a.dp.read_punt()) is not None:
            if m.kind == fp.PUNT_TX:
                return m
        return None

    msg = wait_for(tx_punt, 3, what="PUNT_TX message")
    # a batch of one frame: u16 big-endian length | the sealed packet (the TCP framing)
    assert msg.peer == "pb" and msg.local_index == 1
    packet = msg.packet[2:]
    assert int.from_bytes(msg.packet[:2], "big") == len(packet) and packet[0] == MSG_DATA
    b_addr = b.dp.peer_addr("pa")
    b.dp.inject(packet)
    assert tap.get() == frame
    assert b.dp.global_counters()["rx_injected"] == 1
    assert b.dp.peer_addr("pa") == b_addr  # injected packets never move the address
    assert a.dp.peer_counters("pb")["tx_via_python"] == 1
    b.dp.inject(packet)  # replayed through the same door
    wait_for(lambda: b.dp.peer_counters("pa")["rx_replay"] == 1, 3, what="injected replay dropped")


def test_remove_peer_and_activity(ov: Overlay) -> None:
    a, b = ov.members
    udp_roundtrip(a, b, b"x")
    acts = {(peer, idx): (rx, txm) for peer, idx, rx, txm in b.dp.poll_activity()}
    assert acts[("pa", index_of(a.n, b.n))][0] is True
    assert b.dp.poll_activity() == []  # nothing new since
    firsts = []
    while (m := b.dp.read_punt()) is not None:
        if m.kind == fp.PUNT_FIRST_RX:
            firsts.append((m.peer, m.local_index))
    assert firsts == [("pa", index_of(a.n, b.n))]
    b.dp.remove_peer("pa")
    assert b.dp.peer_counters("pa") == {}
    s = sender(a, 42000)
    s.sendto(data_from(ov, a, b, 77, b"after removal"), (str(b.host.ip), PORT))
    wait_for(lambda: b.dp.global_counters()["rx_unknown_index"] == 1, 3, what="unknown index")
    tx = frame_socket(b)
    tx.send(frame_to(a, overlay_mac(b.n), b"nobody to send to"))
    wait_for(lambda: b.dp.global_counters()["tx_no_peer"] >= 1, 3, what="no peer drop")
