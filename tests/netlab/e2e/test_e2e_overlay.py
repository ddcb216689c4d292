"""The product end to end: a platform process on a public host, `enclave up` agents (TAP +
compiled data plane, real processes) behind different NATs, traffic over the overlay.

    fc1 (full cone) <--direct UDP--> pr1 (port restricted)     AES256-GCM, then ChaCha20
    sa1 (symmetric) <--platform relay--> sb1 (symmetric)

Each case: enrol (once), `enclave up`, intent both ways, connected (`enclave peers --json`),
ping / TCP with a digest / UDP echo over the TAPs; then `intent remove` ends the session and
traffic stops; the agent's exit removes its TAP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, up_pair
from tests.support.peer_paths import on_path
from tests.support.platform import Platform
from tests.support.traffic import ping, tcp_transfer, udp_exchange
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
API_PORT = 8443
CONNECT_TIMEOUT = 15.0  # direct: punch delay + handshake; relay: 5 s give-up + registration


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    topo = Topology(
        sites=[Site("fc", nat=NatType.FULL_CONE), Site("pr", nat=NatType.PORT_RESTRICTED),
               Site("sa", nat=NatType.SYMMETRIC), Site("sb", nat=NatType.SYMMETRIC)],
        public_hosts=["plat"],
    )
    names = ("fc1", "pr1", "sa1", "sb1")
    with platform_lab(topo, tmp_path_factory.mktemp("e2e"), names) as world:
        yield world


def _connect(a: Agent, b: Agent, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Intents both ways; both sides' sessions up on `path` (relay first: a pair may start on
    the relay and move to the direct path it settles on)."""
    intents_both_ways(a, b)
    pa = wait_for(lambda: on_path(a, b, path), timeout=CONNECT_TIMEOUT, interval=0.1,
                  what=f"{a.name} connected to {b.name} on {path}")
    pb = wait_for(lambda: on_path(b, a, path), timeout=CONNECT_TIMEOUT, interval=0.1,
                  what=f"{b.name} connected to {a.name} on {path}")
    return pa, pb


def _traffic(a: Agent, b: Agent, *, tcp_bytes: int) -> None:
    # the first packets may race the other side's key install: poll until an echo comes back
    wait_for(lambda: ping(a.host, b.overlay_ip, count=1), timeout=5, what="first ping")
    assert ping(a.host, b.overlay_ip, count=5) == 5
    assert ping(b.host, a.overlay_ip, count=3) == 3
    sent, got = tcp_transfer(a.host, b.host, b.overlay_ip, size=tcp_bytes)
    assert sent == got
    sent, got = tcp_transfer(b.host, a.host, a.overlay_ip, size=tcp_bytes // 4)
    assert sent == got
    assert udp_exchange(a.host, a.overlay_ip, b.host, b.overlay_ip, count=20) == 20


def _teardown_pair(a: Agent, b: Agent) -> None:
    """intent remove -> session gone on both sides within seconds, traffic stops; exit -> no TAP."""
    a.intent("remove", b.name)
    t0 = time.monotonic()  # stored by the platform (the CLI's own start-up is not counted)
    wait_for(lambda: a.connected(b.name) is None and b.connected(a.name) is None, timeout=15,
             interval=0.1, what="session closed after intent remove")
    assert time.monotonic() - t0 < 5, time.monotonic() - t0
    assert ping(a.host, b.overlay_ip, count=2, timeout=0.5) == 0
    assert udp_exchange(a.host, a.overlay_ip, b.host, b.overlay_ip, count=3, timeout=0.3) == 0
    for x in (a, b):
        assert x.has_link()
        assert x.down() == 0
        assert not x.has_link(), f"{x.name}: TAP left behind after exit"


def _check_peer_entry(p: dict[str, Any], other: Agent, path: set[str]) -> None:
    assert p["path"] in path, p
    assert p["overlay_ip"] == other.overlay_ip
    assert p["rx_bytes"] > 0 and p["tx_bytes"] > 0
    assert p["rx_frames"] > 0 and p["tx_frames"] > 0
    assert p["drops"] == 0, p["dataplane"]


def test_up_refuses_a_bad_interface_cleanly(world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, ag = world
    a = ag["fc1"]
    before = a.host.run(["ip", "-o", "link"]).stdout
    res = a.run("up", "--interface", "bad/name", timeout=30)
    assert res.returncode == 1
    # refused with the options at start (agent/options.py), before any TAP is made
    assert "error: option --interface must be an interface name" in res.stderr, res.stderr
    assert "'bad/name'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert a.host.run(["ip", "-o", "link"]).stdout == before  # nothing half made
    res = a.run("up", "--cipher", "aes256gcm", "--mtu", "20", timeout=30)
    assert res.returncode == 1 and "error:" in res.stderr and "Traceback" not in res.stderr


def test_direct_aes(world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, ag = world
    a, b = ag["fc1"], ag["pr1"]
    up_pair(a, b)
    st = a.status()
    assert st["dataplane"]["tap"] == "enclave0"
    assert st["dataplane"]["cipher"] == "aes256gcm"
    _connect(a, b, "direct-udp")
    _traffic(a, b, tcp_bytes=4 << 20)
    pa = next(p for p in a.peers_cli() if p["name"] == b.name)  # `enclave peers --json`
    pb = b.connected(a.name)
    assert pa["state"] == "connected" and pb is not None
    _check_peer_entry(pa, b, {"direct-udp"})
    _check_peer_entry(pb, a, {"direct-udp"})
    assert pa["cipher"] == pb["cipher"] == "aes256_gcm"
    assert pa["dataplane"]["rx_bytes"] > 4 << 20 or pb["dataplane"]["rx_bytes"] > 4 << 20
    _teardown_pair(a, b)


def test_direct_chacha(world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, ag = world
    a, b = ag["fc1"], ag["pr1"]
    env = {"ENCLAVE_CIPHER": "chacha20poly1305"}
    up_pair(a, b, env=env, extra_b=("--no-offload",))
    assert a.status()["dataplane"]["cipher"] == "chacha20poly1305"
    dp = b.status()["dataplane"]
    assert not dp["udp_gso"] and not dp["tap_gro"] and not dp["vnet_hdr"]
    pa, _pb = _connect(a, b, "direct-udp")
    assert pa["cipher"] == "chacha20_poly1305"
    _traffic(a, b, tcp_bytes=2 << 20)
    _teardown_pair(a, b)


def test_relay_symmetric_pair(world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, ag = world
    a, b = ag["sa1"], ag["sb1"]
    up_pair(a, b)
    pa, pb = _connect(a, b, "relay-udp")
    assert pa["path"] == "relay-udp" and pb["path"] == "relay-udp", (pa, pb)
    _traffic(a, b, tcp_bytes=1 << 20)
    pa = a.connected(b.name)
    assert pa is not None
    _check_peer_entry(pa, b, {"relay-udp"})
    _teardown_pair(a, b)
