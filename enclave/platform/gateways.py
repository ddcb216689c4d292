"""Gateways on the platform: which systems may serve which subnets, and who may use them.

    enclave platform systems gateway NAME --routes 198.19.50.0/24[,...] [--nat | --no-nat]
    enclave platform systems gateway NAME --clear
    enclave platform policy add --name ops-lan --from tag:ops --gateway NAME \\
        --routes 198.19.50.0/24 [--acl tcp:22,udp:53,icmp | any]

A gateway's routes go into its certificate (enclave:gateway:CIDR SANs) from its next issue: the
hub pushes ``{"type": "renew"}`` to the gateway's session when its row and its current
certificate disagree. A gateway policy is also a tag policy from its selector to name:GATEWAY
(so mutual intent introduces the pair); the introductions then carry a GatewayOffer to the
client and GatewayGrants to the gateway (``gateway_info``), clipped to the certified routes.

Clearing a gateway (--clear, DELETE /v1/admin/systems/NAME/gateway) keeps its gateway policies:
they offer no routes until it serves routes again, as when a policy is made before its gateway
serves any (they still introduce the pairs, as tag policies; `policy remove` ends that).
Removing the gateway system deletes its gateway policies in the same transaction
(store.operations._forget).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable

from cryptography import x509

from enclave.cert.encoding import parse_san
from enclave.platform.cli_store import Command, cert_fits, with_store
from enclave.platform.paths import PlatformPaths
from enclave.platform.store import Snapshot, Store, System
from enclave.policy.gateway import (
    GatewayGrant,
    GatewayOffer,
    parse_acl,
    parse_routes,
    routes_within,
)
from enclave.policy.mutual import SystemView, selector_matches

log = logging.getLogger("enclave.platform.hub")
GatewayPolicy = tuple[str, str, str, list[str], list[str]]  # name, from_sel, gateway, routes, acl


@functools.lru_cache(maxsize=65536)
def cert_routes(der: bytes) -> tuple[ipaddress.IPv4Network, ...]:
    """The gateway routes a DER certificate carries (remembered: the hub asks for every
    session's certificate on every pass)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(sorted(parse_san(san).gateway_routes))


def gateway_info(me: System, other: System, policies: list[GatewayPolicy]
                 ) -> tuple[GatewayOffer | None, tuple[GatewayGrant, ...]]:
    """What ``me``'s introduction of ``other`` says about gateways: an offer when ``other`` is
    ``me``'s gateway, grants when ``me`` is ``other``'s gateway."""
    offer_routes: set[ipaddress.IPv4Network] = set()
    grants: list[GatewayGrant] = []
    me_view = SystemView(me.name, me.tags, True)
    other_view = SystemView(other.name, other.tags, True)
    for name, from_sel, gateway, routes, acl in policies:
        if gateway == other.name and selector_matches(from_sel, me_view):
            offer_routes.update(routes_within(parse_routes(routes), other.gateway_routes))
        if gateway == me.name and selector_matches(from_sel, other_view):
            clipped = routes_within(parse_routes(routes), me.gateway_routes)
            if clipped:
                grants.append(GatewayGrant(clipped, parse_acl(acl), name, me.gateway_nat))
    offer = None
    if offer_routes:
        offer = GatewayOffer(tuple(sorted(offer_routes)), nat=other.gateway_nat)
    return offer, tuple(grants)


def needs_renewal(store: Snapshot, system: System, now: int) -> bool:
    """True when the system's current certificate does not carry its gateway routes."""
    cert = store.current_certificate(system.name, now)
    if cert is None:
        return False
    return cert_routes(cert.der) != tuple(sorted(system.gateway_routes))


def register_systems_gateway(ssub: argparse._SubParsersAction,  # type: ignore[type-arg,unused-ignore]
                             data_arg: Callable[[argparse.ArgumentParser], None],
                             guard: Callable[[Command], Command]) -> None:
    def cmd_gateway(args: argparse.Namespace) -> int:
        if args.clear == bool(args.routes):
            raise ValueError("give --routes CIDR[,CIDR...] or --clear")
        routes = () if args.clear else parse_routes(args.routes)

        async def change(store: Store, paths: PlatformPaths) -> System:
            fits = await cert_fits(paths, store) if routes else None
            return await store.set_gateway(args.name, routes, args.nat, fits=fits)

        system = with_store(args, change)
        if routes:
            print(f"system {system.name}: gateway for {','.join(map(str, routes))} "
                  f"({'masquerade' if system.gateway_nat else 'routed'}); "
                  "its certificate is renewed when it next connects")
        else:
            print(f"system {system.name}: no longer a gateway")
        return 0

    p = ssub.add_parser("gateway", help="let a system serve subnets: NAME --routes CIDR,... "
                                        "[--nat|--no-nat] (or --clear)")
    data_arg(p)
    p.add_argument("name")
    p.add_argument("--routes", default="", help="comma-separated IPv4 subnets it may serve")
    p.add_argument("--nat", action=argparse.BooleanOptionalAction, default=True,
                   help="masquerade overlay sources on the LAN (default) or route them")
    p.add_argument("--clear", action="store_true", help="stop being a gateway")
    p.set_defaults(func=guard(cmd_gateway))


class GatewaySync:
    """The hub's gateway bookkeeping (called from Hub.reevaluate / Hub._introduce).

    * a gateway whose current certificate lacks its routes gets one ``renew`` push per
      certificate serial (the agent renews at once; the new certificate is then introduced);
    * an introduced pair whose gateway information changed (policy, routes, a renewed
      certificate) is introduced again, so both agents apply the new offer / grants.
    """

    def __init__(self) -> None:
        self.renew_pushed: dict[str, int] = {}  # system -> serial we asked it to replace
        self.signatures: dict[frozenset[str], str] = {}

    def intro_fields(self, store: Snapshot, me: str, other: str
                     ) -> tuple[GatewayOffer | None, tuple[GatewayGrant, ...]]:
        policies = store.list_gateway_policies()
        if not policies:
            return None, ()
        return gateway_info(store.get_system(me), store.get_system(other), policies)

    def signature(self, store: Snapshot, a: str, b: str, now: int) -> str:
        parts = []
        for me, other in ((a, b), (b, a)):
            offer, grants = self.intro_fields(store, me, other)
            cert = store.current_certificate(other, now)
            parts.append(repr((cert.serial if cert else None,
                               offer.to_json() if offer else None,
                               [g.to_json() for g in grants])))
        return "|".join(parts)

    def push_renewals(self, store: Snapshot, systems: dict[str, System],
                      names: Iterable[str], now: int,
                      send: Callable[[str, dict[str, object]], None]) -> None:
        """A ``renew`` push to each of the connected ``names`` whose current certificate lacks
        its gateway routes (once per certificate serial)."""
        for name in names:
            system = systems.get(name)
            if system is None or not needs_renewal(store, system, now):
                continue
            cert = store.current_certificate(name, now)
            if cert is not None and self.renew_pushed.get(name) != cert.serial:
                self.renew_pushed[name] = cert.serial
                send(name, {"type": "renew", "reason": "gateway routes changed"})

    def sync(self, store: Snapshot, systems: dict[str, System], sessions: dict[str, object],
             introduced: set[frozenset[str]], now: int,
             send: Callable[[str, dict[str, object]], None],
             reintroduce: Callable[[str, str], bool]) -> None:
        self.push_renewals(store, systems, sessions, now, send)
        for pair in list(self.signatures):
            if pair not in introduced:
                del self.signatures[pair]
        for pair in sorted(introduced, key=sorted):
            a, b = sorted(pair)
            sig = self.signature(store, a, b, now)
            old = self.signatures.get(pair)
            if old is None:  # just introduced with this information
                self.signatures[pair] = sig
            elif old != sig and reintroduce(a, b):
                log.info("control: gateway information of %s <-> %s changed; re-introduced",
                         a, b)
                self.signatures[pair] = sig
