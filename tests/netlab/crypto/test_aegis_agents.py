"""AEGIS-256 between real `enclave up` agents (TAP + compiled data plane, real platform).

    plat (platform)      a1, b1: `--cipher aegis256`      c1: default (auto)
    every agent host's underlay (eth0) has MTU 1472: over IPv4 that leaves 1444 bytes of UDP
    payload, exactly what a 1500-byte IPv6 path leaves beside the relay header, so the TAP MTU
    arithmetic is tested at its edge: a full-MTU frame must cross without any fragment on the
    underlay.

Cases: a1 <-> b1 negotiate aegis256 (`enclave peers --json`), TAP MTU 1382 (the 32-byte tag
accounted for), full-MTU pings with DF both ways and a TCP stream, no underlay fragments;
a1 <-> c1 get AES256-GCM (c1 does not allow aegis256), c1 keeps the default MTU 1398.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Host, Lab, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab
from tests.support.platform import Platform
from tests.support.traffic import ping, tcp_transfer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

UNDERLAY_MTU = 1472  # IPv4: 1472 - 28 = 1444 UDP payload = 1500 - 48 (IPv6) - 8 (relay header)
AEGIS_MTU = 1382
DEFAULT_MTU = 1398
World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    names = ("a1", "b1", "c1")
    topo = Topology(public_hosts=["plat", *names])
    with platform_lab(topo, tmp_path_factory.mktemp("aegis"), names) as (lab, plat, ag):
        for name in names:
            lab.host(name).run(["ip", "link", "set", "eth0", "mtu", str(UNDERLAY_MTU)],
                               check=True)
        yield lab, plat, ag


def df_ping(src: Host, dst_ip: str, ip_len: int, *, tries: int = 5) -> bool:
    """ICMP echoes of exactly `ip_len` IP bytes with DF set (`ping -M do -s ip_len-28`);
    True when one is answered. OSError (EMSGSIZE) when it exceeds the local MTU."""
    return ping(src, dst_ip, count=tries, size=ip_len - 28, df=True) > 0


def frag_creates(host: Host) -> int:
    """Ip FragCreates of the host's namespace (/proc/net/snmp): fragments it made."""
    lines = [ln.split() for ln in host.run(["cat", "/proc/net/snmp"], check=True).stdout
             .splitlines() if ln.startswith("Ip:")]
    return int(lines[1][lines[0].index("FragCreates")])


def tap_mtu(a: Agent) -> int:
    res = a.host.run(["ip", "-j", "link", "show", "enclave0"], check=True)
    return int(json.loads(res.stdout)[0]["mtu"])


def direct(a: Agent, b: Agent) -> dict[str, Any] | None:
    """a's peer entry for b once the session runs on a direct path (relay first: a pair may
    start on the UDP relay, whose 8-byte header would not fit this lab's edge-sized underlay)."""
    p = a.connected(b.name)
    return p if p is not None and p["path"] in ("lan", "direct-udp") else None


def connect(a: Agent, b: Agent) -> tuple[dict[str, Any], dict[str, Any]]:
    intents_both_ways(a, b)
    pa = wait_for(lambda: direct(a, b), timeout=20, interval=0.1, what="a connected, direct")
    pb = wait_for(lambda: direct(b, a), timeout=20, interval=0.1, what="b connected, direct")
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
    assert pa is not None and pb is not None
    return pa, pb


def counters(a: Agent, b: Agent) -> dict[str, Any]:
    """a's data-plane counters for its session with b."""
    p = a.connected(b.name)
    assert p is not None
    return dict(p["dataplane"])


def start(a: Agent, b: Agent, extra_a: tuple[str, ...], extra_b: tuple[str, ...]) -> None:
    a.start(*extra_a)
    b.start(*extra_b)
    a.wait_up()
    b.wait_up()


def stop(*agents: Agent) -> None:
    for x in agents:
        assert x.down() == 0


def test_both_allow_aegis256(world: World) -> None:
    _lab, _plat, ag = world
    a, b = ag["a1"], ag["b1"]
    start(a, b, ("--cipher", "aegis256"), ("--cipher", "aegis256"))
    try:
        for x in (a, b):
            assert x.status()["dataplane"]["cipher"] == "aegis256"
            assert tap_mtu(x) == AEGIS_MTU
        connect(a, b)
        pa = next(p for p in a.peers_cli() if p["name"] == b.name)  # `enclave peers --json`
        pb = next(p for p in b.peers_cli() if p["name"] == a.name)
        assert pa["cipher"] == pb["cipher"] == "aegis256"
        frags = (frag_creates(a.host), frag_creates(b.host))
        # full-MTU frames with DF, both ways: no fragmentation in the overlay or the underlay
        assert df_ping(a.host, b.overlay_ip, AEGIS_MTU)
        assert df_ping(b.host, a.overlay_ip, AEGIS_MTU)
        with pytest.raises(OSError):  # one byte more is refused by the TAP (EMSGSIZE)
            df_ping(a.host, b.overlay_ip, AEGIS_MTU + 1, tries=1)
        sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=4 << 20)
        assert sent == got
        sent, got = tcp_transfer(b.host, a.host, a.overlay_ip, size=1 << 20)
        assert sent == got
        assert (frag_creates(a.host), frag_creates(b.host)) == frags
        for p, x, other, received in ((pa, a, b, 1 << 20), (pb, b, a, 4 << 20)):
            c = counters(x, other)
            assert c["rx_decrypt_fail"] == 0 and c["rx_runt"] == 0 and c["tx_send_errors"] == 0
            assert c["rx_bytes"] > received and c["tx_bytes"] > 0
            assert p["state"] == "connected"
    finally:
        stop(a, b)


def test_one_side_default_gets_aes256gcm(world: World) -> None:
    _lab, _plat, ag = world
    a, c = ag["a1"], ag["c1"]
    start(a, c, ("--cipher", "aegis256"), ())
    try:
        assert a.status()["dataplane"]["cipher"] == "aegis256"
        assert c.status()["dataplane"]["cipher"] == "aes256gcm"
        assert (tap_mtu(a), tap_mtu(c)) == (AEGIS_MTU, DEFAULT_MTU)
        pa, pc = connect(a, c)
        assert pa["cipher"] == pc["cipher"] == "aes256_gcm"
        assert (next(p for p in c.peers_cli() if p["name"] == a.name)["cipher"]
                == "aes256_gcm")
        frags = frag_creates(c.host)
        assert df_ping(c.host, a.overlay_ip, DEFAULT_MTU)  # 16-byte tag: 1398 fits
        assert df_ping(a.host, c.overlay_ip, AEGIS_MTU)
        sent, got = tcp_transfer(c.host, a.host, a.overlay_ip, size=2 << 20)
        assert sent == got
        assert frag_creates(c.host) == frags
    finally:
        stop(a, c)
