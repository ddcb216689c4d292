"""Birthday probing with the real product: a platform process, `enclave up` agents behind a
port-restricted NAT (pr1) and a symmetric NAT (sy1).

    plat (API, control, reflector, relay)
       |
    inet --- pr (port-restricted) --- pr1        inet --- sy (symmetric, fully-random) --- sy1

The ordinary punch fails for this pair; the agents' ConnectionManagers start birthday probing
(their NAT classes come from discovery through the daemon) and the session ends up on
direct-udp on both sides, carrying ICMP echoes and 8 MB of TCP each way over the overlay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enclave.netlab import NatType, Site, Topology
from tests.support.lab import platform_lab, start_all
from tests.support.traffic import ping, tcp_transfer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]


def _peer(agent: Any, name: str) -> dict[str, Any]:
    return next((p for p in agent.peers() if p["name"] == name), {})


def test_port_restricted_and_symmetric_agents_end_on_direct_udp(tmp_path: Path,
                                                                netlab_required: None) -> None:
    topo = Topology(sites=[Site("pr", nat=NatType.PORT_RESTRICTED),
                           Site("sy", nat=NatType.SYMMETRIC)], public_hosts=["plat"])
    with platform_lab(topo, tmp_path, ["pr1", "sy1"]) as (_lab, _plat, agents):
        easy, hard = agents["pr1"], agents["sy1"]
        start_all(agents.values())
        easy.intent("add", hard.name)
        hard.intent("add", easy.name)

        def direct() -> bool:
            return (_peer(easy, hard.name).get("path") == "direct-udp"
                    and _peer(hard, easy.name).get("path") == "direct-udp")

        wait_for(direct, timeout=30, what="direct-udp on both sides")
        pe, ph = _peer(easy, hard.name), _peer(hard, easy.name)
        assert pe["endpoint"].startswith(str(hard.host.public_ip) + ":"), pe
        # the hard side runs the session through its winning socket's loopback forwarder (or,
        # 1 time in 257, the data socket's own mapping was the one hit)
        assert ph["endpoint"].rsplit(":", 1)[0] in ("127.0.0.1", "::1",
                                                    str(easy.host.public_ip)), ph
        assert any(ping(easy.host, hard.overlay_ip, count=1, timeout=0.5) for _ in range(4))
        assert any(ping(hard.host, easy.overlay_ip, count=1, timeout=0.5) for _ in range(4))
        # bulk both ways: runs of segments through the hard side's forwarder (GRO in, GSO out)
        for src, dst in ((hard, easy), (easy, hard)):
            sent, got = tcp_transfer(src.host, dst.host, dst.overlay_ip, size=8 << 20)
            assert sent == got, (src.name, dst.name)
        assert _peer(easy, hard.name)["path"] == "direct-udp"
        assert _peer(hard, easy.name)["path"] == "direct-udp"
