"""DataPlane.apply: the one place a Node's PeerKeysUpdated becomes a compiled install or
removal, with the peer's certified identity (MAC, overlay address, gateway routes) carried
into the native peer table.

The compiled DataPlane runs over a socketpair standing in for the TAP fd and a loopback UDP
socket (the loops are not started: installs and removals do not need them)."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Iterator

import pytest

from enclave.cert import SystemIdentity
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.keys import SessionKeys
from enclave.proto.wire import Cipher
from tests.support.fd_tap import FdTap
from tests.support.pki import Pki

engine = pytest.importorskip("enclave.dataplane.engine")

K1, K2 = bytes(range(32)), bytes(range(1, 33))
UDP_PATH = PathAddr(Transport.UDP, "198.18.0.2", 51820)


@pytest.fixture
def plane() -> Iterator[engine.DataPlane]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    dp = engine.DataPlane(FdTap(a.fileno()), udp, offload=False, max_peers=4)  # type: ignore[arg-type]
    yield dp
    dp.close()
    for s in (a, b, udp):
        s.close()


@pytest.fixture(scope="module")
def ident() -> SystemIdentity:
    pki = Pki()
    _key, der, _serial = pki.issue("PEERB")
    got = pki.validate(der)
    assert got is not None
    return got


def keys(local: int = 5, remote: int = 7, cipher: Cipher = Cipher.CHACHA20_POLY1305) -> SessionKeys:
    return SessionKeys(local, remote, K1, K2, cipher)


def test_keys_install_the_peer_with_its_certified_identity(
    plane: engine.DataPlane, ident: SystemIdentity
) -> None:
    gw = dataclasses.replace(ident, gateway_routes=(ipaddress.IPv4Network("192.168.10.0/24"),))
    k = keys()
    plane.apply(PeerKeysUpdated("pb", UDP_PATH, k, (k,), gw))
    [slot] = plane.native.slots()
    assert plane.peer_addr("pb") == ("198.18.0.2", 51820)
    assert plane.native.identity(slot) == {
        "ip4": str(ident.overlay_ip), "ip6": [str(ident.overlay_ip6)],  # derived: cert/overlay6
        "routes": ["192.168.10.0/24"]}
    assert plane.peer_counters("pb")["tx_counter"] == 0
    # the tx key's session is the current one: its rx key reports the tx messages sent
    assert plane.native.activity() == [(slot, 5, 0, 0)]


def test_no_keys_remove_the_peer(plane: engine.DataPlane, ident: SystemIdentity) -> None:
    k = keys()
    plane.apply(PeerKeysUpdated("pb", UDP_PATH, k, (k,), ident))
    assert plane.native.slots() != []
    plane.apply(PeerKeysUpdated("pb", None, None, ()))
    assert plane.native.slots() == [] and plane.peer_counters("pb") == {}
    plane.apply(PeerKeysUpdated("pb", None, None, ()))  # removing what is gone: silence


def test_rekey_keeps_the_slot_and_a_renewed_identity_replaces_the_old(
    plane: engine.DataPlane, ident: SystemIdentity
) -> None:
    old, new = keys(5, 7), keys(9, 11)
    plane.apply(PeerKeysUpdated("pb", UDP_PATH, old, (old,), ident))
    [slot] = plane.native.slots()
    moved = dataclasses.replace(ident, overlay_ip=ipaddress.IPv4Address("100.64.0.77"))
    plane.apply(PeerKeysUpdated("pb", None, new, (new, old), moved))
    assert plane.native.slots() == [slot]
    assert plane.peer_addr("pb") == ("198.18.0.2", 51820)  # None keeps the address
    assert plane.native.identity(slot)["ip4"] == "100.64.0.77"  # type: ignore[index]
    assert sorted(i for _s, i, _r, _t in plane.native.activity()) == [5, 9]


def test_keys_without_identity_are_refused_and_nothing_installed(
    plane: engine.DataPlane,
) -> None:
    k = keys()
    with pytest.raises(ValueError, match="certified identity"):
        plane.apply(PeerKeysUpdated("pb", UDP_PATH, k, (k,), None))
    assert plane.native.slots() == []


def test_a_path_that_is_not_udp_goes_through_python(
    plane: engine.DataPlane, ident: SystemIdentity
) -> None:
    k = keys()
    plane.apply(PeerKeysUpdated("pb", PathAddr(Transport.TCP, "198.18.0.2", 51820), k, (k,),
                                ident))
    assert plane.native.slots() != [] and plane.peer_addr("pb") is None


def test_a_bad_install_frees_the_slot(plane: engine.DataPlane, ident: SystemIdentity) -> None:
    bad = SessionKeys(5, 7, K1, K2[:31], Cipher.CHACHA20_POLY1305)
    with pytest.raises(ValueError, match="32 bytes"):
        plane.apply(PeerKeysUpdated("pb", UDP_PATH, bad, (bad,), ident))
    assert plane.native.slots() == []
    k = keys()
    plane.apply(PeerKeysUpdated("pc", UDP_PATH, k, (k,), ident))
    assert plane.native.slots() == [0]  # the slot came back to the free list


def test_native_install_takes_the_cipher_as_the_handshake_chose_it(
    plane: engine.DataPlane, ident: SystemIdentity
) -> None:
    native = plane.native
    k = keys(cipher=Cipher.CHACHA20_POLY1305)
    native.install(1, k, [k], peer_mac=ident.mac, overlay_ip4="100.64.0.5",
                   overlay_ip6=["fd00::5"], routes=["10.1.0.0/16"])
    assert native.identity(1) == {"ip4": "100.64.0.5", "ip6": ["fd00::5"],
                                  "routes": ["10.1.0.0/16"]}
    for bad in (99, "chacha20poly1305"):  # only a wire.Cipher (or its value) names a cipher
        with pytest.raises(ValueError, match="cipher"):
            native.install(2, None, [SessionKeys(21, 22, K1, K2, bad)],  # type: ignore[arg-type]
                           peer_mac=ident.mac)
    with pytest.raises(ValueError):
        native.install(2, None, [keys(23, 24)], peer_mac=ident.mac, routes=["10.1.0.1/16"])
    assert native.slots() == [1]
