"""The tx loop's TSO + seal paths end to end over real sockets (no namespaces needed).

A vnet_hdr "TAP" stand-in (one end of an AF_UNIX datagram socketpair: one read = one frame)
feeds the running native tx thread; three peers are UDP sockets on loopback. A frame for an
unknown MAC is flooded: the first peers get it through fo_tso_split (copied, sealed in
place), the last through fo_tso_inplace (sealed straight out of the read buffer). Every
datagram is opened with PyNaCl / libsodium and must hold exactly the segments a correct TSO
engine makes (the model in tests/support/offload_frames.py), with consecutive counters.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt

from enclave.proto.keys import SessionKeys
from enclave.proto.wire import MSG_DATA, Cipher
from tests.support.offload_frames import (
    ACK,
    GSO_NONE,
    NEEDS_CSUM,
    PSH,
    Seg,
    expected_segments,
    payload,
    superframe,
    vnet,
)

fp = pytest.importorskip("enclave._fastpath")

KEYS = [bytes([i + 1]) * 32 for i in range(3)]
PEER_MACS = [bytes([2, 0, 0, 0, 1, i]) for i in range(3)]
UNKNOWN_DST = bytes.fromhex("02aabbccdd02")  # the model's destination MAC: never learned
HDR = struct.Struct("<B3xIQ")


@pytest.fixture
def flood() -> Iterator[tuple[socket.socket, list[socket.socket], fp.DataPlane]]:
    tap_ours, tap_dp = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tap_ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    peers = []
    for _ in KEYS:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.settimeout(5)
        peers.append(s)
    for s in (tap_dp, udp):
        s.setblocking(False)
    dp = fp.DataPlane(tap_dp.fileno(), udp.fileno(), vnet_hdr=True, mtu=1500, max_peers=4)
    for slot, (key, mac, s) in enumerate(zip(KEYS, PEER_MACS, peers, strict=True)):
        tx = SessionKeys(0, 100 + slot, key, key, Cipher.CHACHA20_POLY1305)
        dp.install(slot, tx, [], peer_mac=mac, addr=s.getsockname())
    dp.start()
    try:
        yield tap_ours, peers, dp
    finally:
        dp.close()
        for s in (tap_ours, tap_dp, udp, *peers):
            s.close()


def receive(sock: socket.socket, key: bytes, receiver: int, n: int) -> list[tuple[int, bytes]]:
    """n DATA datagrams from sock, authenticated and decrypted: [(counter, frame)]."""
    out = []
    for _ in range(n):
        pkt = sock.recv(70000)
        kind, index, counter = HDR.unpack_from(pkt)
        assert (kind, index) == (MSG_DATA, receiver)
        frame = crypto_aead_chacha20poly1305_ietf_decrypt(
            pkt[16:], pkt[:16], fp.nonce_for(counter), key
        )
        out.append((counter, frame))
    return out


@pytest.mark.parametrize(
    ("seg", "mss"),
    [
        (Seg(payload(20000)), 1448),
        (Seg(payload(9000), v6=True, flags=ACK | PSH), 1428),
        (Seg(payload(64 * 100)), 100),
    ],
    ids=["v4", "v6-psh", "64-segments"],
)
def test_flooded_superframe_reaches_every_peer_segmented(
    flood: tuple[socket.socket, list[socket.socket], fp.DataPlane], seg: Seg, mss: int
) -> None:
    tap, peers, dp = flood
    want = expected_segments(seg, mss)
    for _ in range(2):  # the second read proves the clobbered read buffer is refilled cleanly
        tap.send(superframe(seg, mss))
    for slot, s in enumerate(peers):
        got = receive(s, KEYS[slot], 100 + slot, 2 * len(want))
        assert [c for c, _ in got] == list(range(2 * len(want)))
        assert [f for _, f in got] == want + want, f"peer {slot}"
    assert dp.global_counters()["tx_flooded"] == 2
    assert dp.global_counters()["tx_offload_errors"] == 0


def test_flooded_partial_checksum_frame_is_completed(
    flood: tuple[socket.socket, list[socket.socket], fp.DataPlane],
) -> None:
    tap, peers, dp = flood
    s = Seg(payload(333))
    tap.send(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, s.l4(), 16) + s.build("partial"))
    arp = b"\xff" * 6 + PEER_MACS[0] + b"\x08\x06" + bytes(28)
    tap.send(vnet() + arp)
    for slot, sock in enumerate(peers):
        got = receive(sock, KEYS[slot], 100 + slot, 2)
        assert [f for _, f in got] == [s.build(), arp]
    # a malformed super-frame is dropped and counted, and nothing is sent for it
    bad = bytearray(superframe(Seg(payload(3000)), 1000))
    bad[1] = 3  # GSO_UDP
    tap.send(bytes(bad))
    tap.send(vnet() + arp)
    for slot, sock in enumerate(peers):
        assert [f for _, f in receive(sock, KEYS[slot], 100 + slot, 1)] == [arp]
    assert dp.global_counters()["tx_offload_errors"] > 0
    assert UNKNOWN_DST == s.build()[:6]
