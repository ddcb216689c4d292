"""A gateway's kernel filter (enclave.policy.gateway.ruleset, loaded with nft) keeps a peer's
overlay IPv6 inside the overlay: a peer may source IPv6 from its derived overlay address now,
so a gateway whose host forwards IPv6 would otherwise route it onto its LAN past every grant and
ACL (those are IPv4). Frames "from the peer" are written into the gateway's TAP, as its data
plane does after the AEAD:

    gw namespace                                               lan namespace
      enclave0 (TAP) 100.64.0.1/10, <org /64>::6440:1          veth 2001:db8:1::99/64
      veth 2001:db8:1::1/64, IPv6 forwarding on  <----------->   (UDP listener)

UDP from the peer's overlay IPv6 to the LAN host is dropped at the TAP's ingress (counted
not_routed_<peer>) and never reaches the LAN; UDP to the gateway's overlay IPv6 arrives.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from enclave.cert.overlay6 import org_prefix
from enclave.dataplane.tap import TapDevice, in_netns
from enclave.policy.gateway import (
    GatewayGrant,
    LocalView,
    PeerView,
    parse_counters,
    parse_routes,
    ruleset,
    teardown_script,
)
from tests.support.frames6 import udp6
from tests.support.ident_frames import ETH_IPV6, eth

pytestmark = [pytest.mark.netlab, pytest.mark.root]

PREFIX = org_prefix(bytes(range(32)))
GW6 = str(PREFIX.network_address + 0x64400001)
PEER6 = str(PREFIX.network_address + 0x64400005)
LAN_GW6, LAN_HOST6 = "2001:db8:1::1", "2001:db8:1::99"
GW_MAC, PEER_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000005")
PORT = 7777
ROUNDS = 5


def _in(ns: str, *argv: str, stdin: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True,
                          text=True, timeout=10, input=stdin).stdout


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tag = secrets.token_hex(3)
    gw, lan = f"enl-g6-{tag}", f"enl-l6-{tag}"
    made: list[str] = []
    try:
        for ns in (gw, lan):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
            made.append(ns)
            _in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0", "net.ipv6.conf.default.accept_dad=0")
            _in(ns, "ip", "link", "set", "lo", "up")
        _in(gw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        _in(gw, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "up0",
            "netns", lan)
        for ns, dev, addr in ((gw, "lan0", LAN_GW6), (lan, "up0", LAN_HOST6)):
            _in(ns, "ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            _in(ns, "ip", "link", "set", dev, "up")
        _in(lan, "ip", "-6", "route", "add", str(PREFIX), "via", LAN_GW6)
        # a static neighbour: the forwarding under test must not wait on ND across the veth
        mac = json.loads(_in(lan, "ip", "-j", "link", "show", "up0"))[0]["address"]
        _in(gw, "ip", "-6", "neigh", "replace", LAN_HOST6, "lladdr", mac, "dev", "lan0",
            "nud", "permanent")
        yield gw, lan
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


def _listener(ns: str, host: str) -> socket.socket:
    sock: socket.socket = in_netns(ns, lambda: socket.socket(socket.AF_INET6,
                                                             socket.SOCK_DGRAM))
    sock.bind((host, PORT))
    sock.settimeout(0.2)
    return sock


def _drain(sock: socket.socket, wait: float = 1.0) -> list[bytes]:
    got: list[bytes] = []
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            got.append(sock.recv(2048))
        except TimeoutError:
            continue
    return got


def test_a_peers_overlay_ipv6_is_not_routed_past_the_gateway(
        namespaces: tuple[str, str]) -> None:
    gw, lan = namespaces
    served = parse_routes("198.19.2.0/24")
    local = LocalView("enclave0", ipaddress.IPv4Interface("100.64.0.1/10"), served, True,
                      PREFIX)
    peer = PeerView("PEER", PEER_MAC, ipaddress.IPv4Address("100.64.0.5"),
                    grants=(GatewayGrant(served),))
    with TapDevice("enclave0", mac=GW_MAC.hex(":"), address="100.64.0.1/10",
                   address6=f"{GW6}/64", netns=gw) as tap:
        _in(gw, "nft", "-f", "-", stdin=ruleset(local, [peer]))
        try:
            on_lan, on_gw = _listener(lan, LAN_HOST6), _listener(gw, GW6)
            try:
                for _ in range(ROUNDS):
                    tap.write(eth(GW_MAC, PEER_MAC, ETH_IPV6,
                                  udp6(PEER6, LAN_HOST6, PORT, PORT, b"around")))
                    tap.write(eth(GW_MAC, PEER_MAC, ETH_IPV6,
                                  udp6(PEER6, GW6, PORT, PORT, b"overlay")))
                lan_got, gw_got = _drain(on_lan), _drain(on_gw, 0.3)
            finally:
                on_lan.close()
                on_gw.close()
            listing = json.loads(_in(gw, "nft", "-j", "list", "counters", "table", "netdev",
                                     "enclave_gw"))
        finally:
            _in(gw, "nft", "-f", "-", stdin=teardown_script())
    assert lan_got == []
    assert gw_got == [b"overlay"] * ROUNDS
    assert parse_counters(listing)["PEER"]["not_routed"] == ROUNDS
