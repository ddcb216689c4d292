"""A gateway lab: a NATed client, two gateways on a LAN, and a plain LAN host (no agent).

    site a (port-restricted NAT)          site b 198.19.2.0/24 (routed, no NAT)
    +-----------------------+             +--------------------------------------------+
    | a1  198.19.1.11       |   UDP       | b1 198.19.2.11  gateway 1 (100.64.0.2)      |
    | enclave0 100.64.0.1   |<===========>| b2 198.19.2.12  gateway 2 (100.64.0.3)      |
    | route 198.19.2.0/24   |  overlay    | b3 198.19.2.13  plain LAN host, no agent    |
    |  via active gateway   |  (static    +--------------------------------------------+
    +-----------------------+   keys)

Sessions use the compiled DataPlane with static keys (tests/support/overlay.py); each member
gets a GatewayManager applied inside its namespace. The gateways masquerade, so the LAN host
sees the serving gateway's LAN address as the source: that tells which gateway carried a flow
(and that it did not come over the underlay, where it would show the client NAT's address).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from dataclasses import dataclass

from enclave.agent.gateway import GatewayManager, GatewayProber, mark_socket
from enclave.netlab import Host, Lab, NatType, Site, Topology
from enclave.policy.gateway import (
    GatewayGrant,
    GatewayOffer,
    LocalView,
    PeerView,
    parse_acl,
    parse_routes,
)
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.keys import SessionKeys
from tests.support.overlay import (
    PORT,
    Member,
    Overlay,
    index_of,
    member_identity,
    overlay_ip,
    overlay_mac,
)
from tests.support.traffic import ping

LAN = "198.19.2.0/24"
TOPOLOGY = Topology(sites=[Site("a", nat=NatType.PORT_RESTRICTED, hosts=1),
                           Site("b", nat=NatType.NONE, hosts=3)])


class NatOverlay(Overlay):
    """Static sessions addressed to where the internet sees each host (its NAT's address);
    a member named in `cert_routes` is certified for those gateway routes (the sources the
    peers' data planes accept from it)."""

    def __init__(self, lab: Lab, hosts: list[Host],
                 cert_routes: dict[str, tuple[ipaddress.IPv4Network, ...]]) -> None:
        self.cert_routes = cert_routes
        super().__init__(lab, hosts)

    def update_for(self, a: Member, b: Member, *, tx_key: bytes, rx_key: bytes,
                   bridging: bool = False) -> PeerKeysUpdated:
        tx = SessionKeys(index_of(b.n, a.n), index_of(a.n, b.n), rx_key, tx_key, self.cipher)
        ident = member_identity(b, bridging=bridging)
        routes = self.cert_routes.get(b.name)
        if routes:
            ident = dataclasses.replace(ident, gateway_routes=routes)
        return PeerKeysUpdated(b.name, (str(b.host.public_ip), PORT), tx, (tx,), ident)


def peer_view(m: Member, **kw: object) -> PeerView:
    return PeerView(m.name, overlay_mac(m.n), ipaddress.IPv4Address(overlay_ip(m.n)),
                    **kw)  # type: ignore[arg-type]


@dataclass
class GatewayLab:
    lab: Lab
    overlay: NatOverlay
    client: Member
    gateways: list[Member]
    managers: dict[str, GatewayManager]
    prober: GatewayProber | None = None

    def manager_apply(self, m: Member) -> None:
        mgr = self.managers[m.name]
        m.host.call(mgr.apply)

    def stop_gateway(self, m: Member) -> None:
        """What `enclave down` on a gateway does to the data path: sessions, TAP, filter gone."""
        mgr = self.managers.pop(m.name)
        m.host.call(mgr.close)
        m.dp.close()
        m.tap.close()
        m.sock.close()
        self.overlay.members.remove(m)

    def close(self) -> None:
        if self.prober is not None:
            self.prober.stop()
        for m in [self.client, *self.gateways]:
            mgr = self.managers.pop(m.name, None)
            if mgr is not None:
                m.host.call(mgr.close)
        self.overlay.close()


def build(lab: Lab, *, grant_routes: str = "198.19.2.0/28", acl: str = "icmp,tcp:7000,udp:7001",
          nat: bool = True, probe: bool = True) -> GatewayLab:
    a1, b1, b2 = lab.host("a1"), lab.host("b1"), lab.host("b2")
    served = parse_routes(LAN)
    overlay = NatOverlay(lab, [a1, b1, b2], {b1.name: served, b2.name: served})
    client, g1, g2 = overlay.members
    gl = GatewayLab(lab, overlay, client, [g1, g2], {})
    try:
        for m in overlay.members:
            mark_socket(m.sock)
        for g in (g1, g2):
            overlay.connect(client, g)
        grant = GatewayGrant(parse_routes(grant_routes), parse_acl(acl), "ops-lan")
        for g in (g1, g2):
            local = LocalView("enclave0", ipaddress.IPv4Interface(f"{overlay_ip(g.n)}/10"),
                              served, nat)
            mgr = GatewayManager(local)
            mgr.upsert_peer(peer_view(client, grants=(grant,)))
            gl.managers[g.name] = mgr
            gl.manager_apply(g)
        cmgr = GatewayManager(LocalView("enclave0",
                                        ipaddress.IPv4Interface(f"{overlay_ip(client.n)}/10")))
        for g in (g1, g2):
            cmgr.upsert_peer(peer_view(g, cert_routes=served,
                                       offer=GatewayOffer(served, nat=nat)))
        gl.managers[client.name] = cmgr
        gl.manager_apply(client)
        for g in (g1, g2):  # warm up: ARP through the overlay and the client's NAT mapping
            deadline = time.monotonic() + 10.0
            while not ping(client.host, overlay_ip(g.n), count=1, timeout=0.5):
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway {g.name} unreachable over the overlay")
        if probe:
            gl.prober = GatewayProber(cmgr)
            client.host.call(gl.prober.start)  # its thread inherits the namespace
    except BaseException:
        gl.close()
        raise
    return gl
