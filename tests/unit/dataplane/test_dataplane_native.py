"""The data plane's Python surface without a network: validation, punt format, slots, reclaim.

The native DataPlane is built over a socketpair (stand-ins for the TAP and UDP fds); threads
are started only where a test needs them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from enclave.dataplane import engine
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.keys import SessionKeys
from enclave.proto.wire import Cipher
from tests.support.fd_tap import socketpair_dataplane

fp = pytest.importorskip("enclave._fastpath")

MAC = bytes([2, 0, 0, 0, 0, 9])
KEY = bytes(range(32))
AES, CHACHA = Cipher.AES256_GCM, Cipher.CHACHA20_POLY1305


def keys(local: int, remote: int = 7, key: bytes = KEY, cipher: object = CHACHA) -> SessionKeys:
    """Session keys as a handshake would make them (the same key bytes both ways)."""
    return SessionKeys(local, remote, key, key, cipher)  # type: ignore[arg-type]


@pytest.fixture
def native() -> Iterator[fp.DataPlane]:
    with socketpair_dataplane(max_peers=4) as dp:
        yield dp


def test_punt_header_round_trip() -> None:
    raw = struct.pack(
        "<BBHiI16s", fp.PUNT_DATAGRAM, 4, 0, -1, 0, bytes([198, 18, 0, 1]) + bytes(12)
    )
    raw = raw[:2] + (51820).to_bytes(2, "big") + raw[4:] + b"payload"
    kind, slot, index, addr, packet = engine.parse_punt(raw)
    assert (kind, slot, index, addr, packet) == (1, -1, 0, ("198.18.0.1", 51820), b"payload")
    v6 = bytearray(raw)
    v6[1] = 6
    v6[12:28] = bytes(15) + b"\x01"
    assert engine.parse_punt(bytes(v6))[3] == ("::1", 51820)
    with pytest.raises(ValueError):
        engine.parse_punt(raw[:20])
    bad = bytearray(raw)
    bad[1] = 9
    with pytest.raises(ValueError):
        engine.parse_punt(bytes(bad))


def test_path_target_maps_paths() -> None:
    pt = engine.path_target
    assert pt(PathAddr(Transport.UDP, "198.18.0.2", 51820)) == engine.PathTarget(
        ("198.18.0.2", 51820))
    assert pt(PathAddr(Transport.TCP, "198.18.0.2", 51820)) == engine.PathTarget(via_python=True)
    assert pt(PathAddr(Transport.RELAY_TLS, "h", 3)) == engine.PathTarget(via_python=True)
    relayed = PathAddr(Transport.RELAY, "198.18.0.9", 7)
    assert pt(relayed) == engine.PathTarget(via_python=True)  # no route callback: Python
    routes = {relayed: (("198.18.0.9", 3478), 7)}
    # the UDP relay with a known channel: natively, to the relay's address
    assert pt(relayed, routes.get) == engine.PathTarget(("198.18.0.9", 3478), relay_channel=7)
    other = PathAddr(Transport.RELAY, "198.18.0.9", 8)
    assert pt(other, routes.get) == engine.PathTarget(via_python=True)  # unknown channel
    named = {relayed: (("relay.example", 3478), 7)}
    assert pt(relayed, named.get) == engine.PathTarget(via_python=True)  # a name: Python's
    assert pt(("10.0.0.1", 1)) == engine.PathTarget(("10.0.0.1", 1))
    assert pt(None) == engine.PathTarget()
    with pytest.raises(ValueError):
        pt("198.18.0.2:1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"peer_mac": b"\x01" + MAC[1:]}, "unicast"),
        ({"peer_mac": MAC[:5]}, "6 bytes"),
        ({"rx": [keys(i, cipher=AES) for i in range(1, 6)]}, "at most"),
        ({"rx": [keys(0, cipher=AES)]}, "receive index"),
        ({"rx": [keys(5, cipher=AES), keys(5, cipher=AES)]}, "duplicate"),
        ({"rx": [keys(5, cipher=13)]}, "cipher"),
        ({"rx": [keys(5, key=KEY[:31])]}, "32 bytes"),
        ({"addr": ("198.18.0.1", 0)}, "port"),
        ({"slot": 4}, "out of range"),
        ({"relay_channel": 0x10000}, "relay_channel"),
        ({"relay_channel": 5, "via_python": True}, "relay_channel"),
    ],
)
def test_install_rejects_bad_input(native: fp.DataPlane, kwargs: dict, match: str) -> None:
    args = {
        "slot": 0,
        "peer_mac": MAC,
        "allow_bridging": False,
        "addr": ("198.18.0.1", 51820),
        "tx": keys(5),
        "rx": [keys(5)],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        native.install(
            args["slot"],
            args["tx"],
            args["rx"],
            peer_mac=args["peer_mac"],
            allow_bridging=args["allow_bridging"],
            addr=args["addr"],
            relay_channel=args.get("relay_channel", 0),
            via_python=args.get("via_python", False),
        )
    assert native.slots() == []  # nothing half-installed


def test_indices_unique_across_slots_and_slot_lifecycle(native: fp.DataPlane) -> None:
    # the tx key's session (99) has no receive key here: no rx key is marked current
    native.install(0, keys(99), [keys(5)], peer_mac=MAC, addr=("198.18.0.1", 51820))
    with pytest.raises(ValueError, match="already used by slot 0"):
        native.install(1, None, [keys(5)], peer_mac=MAC)
    native.install(1, None, [keys(6)], peer_mac=MAC, addr=("2001:db8::1", 4000))
    assert native.slots() == [0, 1]
    assert native.get_addr(0) == ("198.18.0.1", 51820)
    assert native.get_addr(1) == ("2001:db8::1", 4000)
    c = native.counters(0)
    assert c["tx_counter"] == 0 and c["rx_frames"] == 0
    assert "tx_counter" not in native.counters(1)  # receive-only session
    assert sorted(native.activity()) == [(0, 5, 0, None), (1, 6, 0, None)]
    native.set_addr(0, None)
    assert native.get_addr(0) is None
    native.remove(0)
    native.remove(0)  # idempotent
    assert native.slots() == [1]
    assert native.get_addr(0) is None
    # with no thread running, every retired snapshot and key is freed at once
    assert native.reclaim() == 0


def test_current_flag_marks_the_tx_session(native: fp.DataPlane) -> None:
    native.install(
        2,
        keys(9, cipher=AES if fp.aes256gcm_available() else CHACHA),
        [keys(5), keys(9)],
        peer_mac=MAC,
    )
    acts = {index: sent for _slot, index, _rx, sent in native.activity()}
    assert acts == {5: None, 9: 0}


def test_start_stop_restart_and_close(native: fp.DataPlane) -> None:
    native.start()
    assert native.running
    with pytest.raises(RuntimeError):
        native.start()
    native.stop()
    assert not native.running
    native.start()  # can run again after a stop
    native.stop()
    native.stop()  # idempotent


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError):
        fp.DataPlane(-1, 3)
    with pytest.raises(ValueError):
        fp.DataPlane(3, 4, mtu=10)
    with pytest.raises(ValueError):
        fp.DataPlane(3, 4, tap_gro=True)  # GRO writes need a vnet_hdr TAP
    with pytest.raises(ValueError):
        fp.DataPlane(3, 4, max_peers=0)
