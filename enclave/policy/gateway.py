"""Gateways (pure): which subnets a peer may serve or reach, the kernel filter that enforces it,
and which gateway carries each subnet (active/passive failover).

    client a1 (100.64.0.5)            gateway g1 (100.64.0.9, cert: enclave:gateway:198.19.2.0/24)
    route 198.19.2.0/24 via           enclave0 --ingress filter--> forward --masquerade--> eth0
      100.64.0.9 dev enclave0 metric  (netdev enclave_gw)          (ip enclave_gw)         |
    enclave0 ingress: from g1's MAC                                                 plain LAN host
      accept ip saddr in g1's routes                                              198.19.2.13

Who says what (all via the platform, over the pinned control channel):
  * the gateway's certificate carries its routes (``enclave:gateway:CIDR`` SANs): a client never
    installs or accepts a route the CA did not certify for that gateway;
  * an introduction to a client carries a ``GatewayOffer`` (the routes of the gateway policy that
    matched, NAT or routed mode); an introduction to a gateway carries ``GatewayGrant`` s (the
    routes and ACL the client may use through it). The receiver enforces: the gateway drops
    traffic from a client outside its grants, the client drops "routed" traffic from a gateway
    whose source is not in that gateway's certified routes.

Kernel filter (``ruleset``), one atomic ``nft -f`` transaction, on the overlay interface.
An ACL is stateful: it decides which *new* flows a client may open into the served routes;
packets of a connection conntrack already knows (replies to a flow a LAN host opened towards
the client's overlay IP, ICMP errors about it) pass. The netdev ingress hook runs before
conntrack, so it only marks what the ACL did not match; the ``ip`` table decides after it:

    table netdev enclave_gw                       (ingress of enclave0 = frames from peers)
      chain ingress: IPv4 / IPv6: ether saddr vmap { <peer MAC> : jump p_<peer> }
                                                                       (others: accept)
      chain p_<peer>:
        ip saddr outside {its overlay IP, its certified+offered routes}  -> drop  spoofed_src
        ip daddr in overlay / multicast / broadcast                     -> accept
        ip6 daddr in overlay IPv6 /64 / link-local / multicast          -> accept
        ip daddr in a grant's routes and the grant's ACL matches        -> GRANT_MARK, accept
                                                                            routed
        ip daddr in a grant's routes (ACL did not match)                -> pending mark of
                                                                           this peer, accept
        ip daddr in a route this system serves (no grant)               -> drop  route_denied
        any other IPv4 or IPv6 destination                              -> drop  not_routed
    table ip enclave_gw                           (only on a gateway)
      prerouting (after conntrack, before routing: covers forwarded and local traffic):
                   from enclave0: meta mark vmap { <pending mark of peer> : jump a_<peer> }
      chain a_<peer>:
        ct state established,related  -> GRANT_MARK, accept                    routed
        anything else (a new flow)    -> drop                              acl_denied
      forward:     from enclave0 without the grant mark -> drop (forward_denied)
      postrouting: NAT mode: overlay sources leaving by another interface -> masquerade

    pending mark (32 bits):  | 0x4550 ("EP") | peer index in the script, 1..65535 |

IPv6: a peer's IPv6 sources are bound by the data plane (its EUI-64 link-local, its derived
overlay IPv6, enclave.cert.overlay6); gateways serve IPv4 routes only, so IPv6 from a peer may
reach overlay, link-local and multicast destinations and nothing else: a gateway whose host
forwards IPv6 never routes a peer's overlay-sourced IPv6 past the grants and ACLs above.

Counters are named ``<reason>_<peer>`` (reasons in DROP_REASONS), read back by the agent from
both tables (``routed`` is counted in both: sum them, ``merge_counters``).
Nothing here does I/O: the agent (enclave.agent.gateway) applies the text and the route plan.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

Route = ipaddress.IPv4Network
_Net = TypeVar("_Net", ipaddress.IPv4Network, ipaddress.IPv6Network)

TABLE = "enclave_gw"
GRANT_MARK = 0x454E4757  # "ENGW": set on frames a grant admitted; forward drops the rest
ACL_PENDING_MARK = 0x45500000  # "EP" | peer index: a grant's route, the ACL did not match
MAX_PEERS = 0xFFFF  # the peer index must fit the pending mark's low 16 bits
ROUTE_METRIC = 50  # metric of the routes a client installs via a gateway
# Gateway routes live in their own table, consulted by a rule for every packet *except* the
# agent's own encrypted ones (its data socket carries SOCKET_MARK): a gateway's underlay
# address may lie inside the very subnet it serves, and its tunnel must not route into itself.
#     ip rule: pref RULE_PRIORITY  not fwmark SOCKET_MARK  lookup ROUTE_TABLE
ROUTE_TABLE = 51820
RULE_PRIORITY = 5180
SOCKET_MARK = 0x454E4353  # "ENCS"
DEFAULT_PRIORITY = 100  # lower wins when two gateways serve the same subnet
MAX_ROUTES = 64
MAX_ACL = 32
DROP_REASONS = ("spoofed_src", "acl_denied", "route_denied", "not_routed")
ACCEPT_REASON = "routed"  # counter of frames a grant admitted
FORWARD_DENIED = "forward_denied"
ACL_PROTOCOLS = ("any", "icmp", "tcp", "udp")
_LOCAL_DESTS = ("224.0.0.0/4", "255.255.255.255")
_LOCAL_DESTS6 = ("fe80::/10", "ff00::/8")  # link-local (ND, MLD replies), multicast
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class GatewayConfigError(ValueError):
    """A malformed route list, ACL, offer or grant."""


# -- routes and ACLs ------------------------------------------------------------------------------


def parse_routes(value: str | Iterable[str]) -> tuple[Route, ...]:
    """``"198.19.50.0/24,10.1.0.0/16"`` (or a list) -> sorted, de-duplicated networks.

    Host bits must be zero; the default route and loopback / link-local / multicast ranges are
    refused (a gateway serves subnets, not the whole internet or the overlay itself).
    """
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    out: set[Route] = set()
    for item in items:
        if not isinstance(item, str) or not item:
            raise GatewayConfigError(f"bad route {item!r}")
        try:
            net = ipaddress.IPv4Network(item, strict=True)
        except ValueError as exc:
            raise GatewayConfigError(f"bad route {item!r}: {exc}") from None
        if net.prefixlen == 0:
            raise GatewayConfigError("a gateway cannot serve the default route 0.0.0.0/0")
        if net.is_loopback or net.is_link_local or net.is_multicast or net.is_unspecified:
            raise GatewayConfigError(f"route {net} is not a routable unicast subnet")
        out.add(net)
    if not out:
        raise GatewayConfigError("no routes given")
    if len(out) > MAX_ROUTES:
        raise GatewayConfigError(f"at most {MAX_ROUTES} routes")
    return tuple(sorted(out))


@dataclass(frozen=True, order=True)
class AclEntry:
    """``any`` | ``icmp`` | ``tcp:PORT[-PORT]`` | ``udp:PORT[-PORT]``."""

    proto: str
    lo: int = 0
    hi: int = 0

    def __str__(self) -> str:
        if self.proto in ("any", "icmp"):
            return self.proto
        ports = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        return f"{self.proto}:{ports}"

    def nft(self) -> str:
        """The nft match for this entry ('' for any)."""
        if self.proto == "any":
            return ""
        if self.proto == "icmp":
            return "ip protocol icmp"
        ports = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        return f"{self.proto} dport {ports}"


ACL_ANY: tuple[AclEntry, ...] = (AclEntry("any"),)


def parse_acl_entry(text: str) -> AclEntry:
    if not isinstance(text, str):
        raise GatewayConfigError(f"bad ACL entry {text!r}")
    t = text.strip().lower()
    if t in ("any", "icmp"):
        return AclEntry(t)
    proto, sep, ports = t.partition(":")
    if proto not in ("tcp", "udp") or not sep:
        raise GatewayConfigError(f"ACL entry {text!r} must be tcp:PORT, udp:PORT, icmp or any")
    lo_s, dash, hi_s = ports.partition("-")
    if not lo_s.isdigit() or (dash and not hi_s.isdigit()):
        raise GatewayConfigError(f"ACL entry {text!r}: bad port")
    lo = int(lo_s)
    hi = int(hi_s) if dash else lo
    if not 1 <= lo <= hi <= 65535:
        raise GatewayConfigError(f"ACL entry {text!r}: ports must be 1..65535, low <= high")
    return AclEntry(proto, lo, hi)


def parse_acl(value: str | Iterable[str] | None) -> tuple[AclEntry, ...]:
    """``"tcp:22,udp:53,icmp"`` -> entries; None or empty -> any. ``any`` absorbs the rest."""
    if value is None:
        return ACL_ANY
    items = [s for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    if not items:
        return ACL_ANY
    if len(items) > MAX_ACL:
        raise GatewayConfigError(f"at most {MAX_ACL} ACL entries")
    entries = {parse_acl_entry(i) for i in items}
    if AclEntry("any") in entries:
        return ACL_ANY
    return tuple(sorted(entries))


def routes_within(routes: Iterable[Route], allowed: Iterable[Route]) -> tuple[Route, ...]:
    """The routes that lie inside some allowed route (a policy may not exceed the cert)."""
    allow = list(allowed)
    return tuple(sorted({r for r in routes if any(r.subnet_of(a) for a in allow)}))


# -- what introductions carry ----------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayOffer:
    """To a client: the introduced peer is your gateway for ``routes``."""

    routes: tuple[Route, ...]
    nat: bool = True
    priority: int = DEFAULT_PRIORITY

    def to_json(self) -> dict[str, Any]:
        return {"routes": [str(r) for r in self.routes], "nat": self.nat,
                "priority": self.priority}

    @classmethod
    def from_json(cls, obj: Any) -> GatewayOffer:
        if not isinstance(obj, dict):
            raise GatewayConfigError("gateway offer is not an object")
        prio = obj.get("priority", DEFAULT_PRIORITY)
        if not isinstance(prio, int) or isinstance(prio, bool) or not 0 <= prio <= 65535:
            raise GatewayConfigError("bad gateway priority")
        nat = obj.get("nat", True)
        if not isinstance(nat, bool):
            raise GatewayConfigError("bad gateway nat flag")
        routes = obj.get("routes")
        if not isinstance(routes, list):
            raise GatewayConfigError("gateway offer without a route list")
        return cls(parse_routes(routes), nat, prio)


@dataclass(frozen=True)
class GatewayGrant:
    """To a gateway: the introduced peer may reach ``routes`` through you, limited by ``acl``."""

    routes: tuple[Route, ...]
    acl: tuple[AclEntry, ...] = ACL_ANY
    policy: str = ""
    nat: bool = True  # the gateway's mode: masquerade the peer's traffic, or route it

    def to_json(self) -> dict[str, Any]:
        return {"routes": [str(r) for r in self.routes], "acl": [str(a) for a in self.acl],
                "policy": self.policy, "nat": self.nat}

    @classmethod
    def from_json(cls, obj: Any) -> GatewayGrant:
        if not isinstance(obj, dict) or not isinstance(obj.get("routes"), list):
            raise GatewayConfigError("malformed gateway grant")
        acl = obj.get("acl")
        if acl is not None and not isinstance(acl, list):
            raise GatewayConfigError("gateway grant ACL must be a list")
        policy = obj.get("policy", "")
        if not isinstance(policy, str) or len(policy) > 64:
            raise GatewayConfigError("bad gateway grant policy name")
        nat = obj.get("nat", True)
        if not isinstance(nat, bool):
            raise GatewayConfigError("bad gateway grant nat flag")
        return cls(parse_routes(obj["routes"]), parse_acl(acl), policy, nat)


def grants_from_json(obj: Any) -> tuple[GatewayGrant, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list) or len(obj) > MAX_ACL:
        raise GatewayConfigError("gateway grants must be a short list")
    return tuple(GatewayGrant.from_json(g) for g in obj)


# -- the state the agent keeps -------------------------------------------------------------------


@dataclass(frozen=True)
class LocalView:
    """This system: its overlay interface and address, the routes it serves (its cert's) and
    the org's overlay IPv6 /64 (enclave.cert.overlay6), when it has one."""

    iface: str
    overlay: ipaddress.IPv4Interface
    served: tuple[Route, ...] = ()
    nat: bool = True
    overlay6: ipaddress.IPv6Network | None = None

    def __post_init__(self) -> None:
        if not _IFACE_RE.match(self.iface):
            raise GatewayConfigError(f"bad interface name {self.iface!r}")


@dataclass(frozen=True)
class PeerView:
    """One introduced peer as far as gateways are concerned."""

    name: str
    mac: bytes
    overlay_ip: ipaddress.IPv4Address
    cert_routes: tuple[Route, ...] = ()  # what its certificate says it may serve
    offer: GatewayOffer | None = None  # it is our gateway for these (from the introduction)
    grants: tuple[GatewayGrant, ...] = ()  # it may use us as its gateway for these
    up: bool = True  # answers liveness probes (a gateway the agent has not heard yet: False)

    def __post_init__(self) -> None:
        if len(self.mac) != 6:
            raise GatewayConfigError(f"peer {self.name}: MAC must be 6 bytes")

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes we accept traffic from and route via this peer: offered AND certified."""
        if self.offer is None:
            return ()
        return routes_within(self.offer.routes, self.cert_routes)


def _mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def chain_id(name: str) -> str:
    """nft-safe identifier for a peer name (system names are base32; tests use anything)."""
    return "p_" + re.sub(r"[^A-Za-z0-9_]", "_", name)[:40]


def _set(nets: Iterable[_Net]) -> str:
    """An anonymous nft set of networks, overlaps merged (nft refuses overlapping intervals)."""
    merged = ipaddress.collapse_addresses(nets)
    return "{ " + ", ".join(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
                            for n in merged) + " }"


def is_active(local: LocalView, peers: Iterable[PeerView]) -> bool:
    """The filter is needed when this system serves routes or some peer is our gateway."""
    return bool(local.served) or any(p.routes for p in peers)


def ruleset(local: LocalView, peers: Iterable[PeerView]) -> str:
    """The complete nft script: replaces both tables atomically (``nft -f -``)."""
    plist = sorted(peers, key=lambda p: p.name)
    if len(plist) > MAX_PEERS:
        raise GatewayConfigError(f"at most {MAX_PEERS} peers in the gateway filter")
    dev = local.iface
    netdev_reasons = tuple(r for r in DROP_REASONS if r != "acl_denied")  # acl_denied: ip table
    lines = [
        f"table netdev {TABLE} {{}}",  # make sure it exists so the delete cannot fail
        f"delete table netdev {TABLE}",
        f"table netdev {TABLE} {{",
    ]
    for p in plist:
        for reason in (*netdev_reasons, ACCEPT_REASON):
            lines.append(f"  counter {reason}_{chain_id(p.name)[2:]} {{}}")
    lines.append("  chain ingress {")
    lines.append(f'    type filter hook ingress device "{dev}" priority 0; policy accept;')
    if plist:
        vmap = ", ".join(f"{_mac(p.mac)} : jump {chain_id(p.name)}" for p in plist)
        lines.append(f"    meta protocol {{ ip, ip6 }} ether saddr vmap {{ {vmap} }}")
    lines.append("  }")
    local_dests = [local.overlay.network, *(ipaddress.IPv4Network(d) for d in _LOCAL_DESTS)]
    local_dests6 = [*(() if local.overlay6 is None else (local.overlay6,)),
                    *(ipaddress.IPv6Network(d) for d in _LOCAL_DESTS6)]
    pending: list[tuple[str, int]] = []  # (peer tag, its pending mark) for the ip table
    for index, p in enumerate(plist, start=1):
        cid = chain_id(p.name)
        tag = cid[2:]
        mark = ACL_PENDING_MARK | index
        lines.append(f"  chain {cid} {{")
        sources = [ipaddress.IPv4Network(p.overlay_ip), *p.routes]
        lines.append(f"    ip saddr != {_set(sources)} counter name spoofed_src_{tag} drop")
        lines.append(f"    ip daddr {_set(local_dests)} accept")
        lines.append(f"    ip6 daddr {_set(local_dests6)} accept")
        for grant in p.grants:
            routes = routes_within(grant.routes, local.served)
            if not routes:
                continue
            for entry in grant.acl:
                match = entry.nft()
                lines.append(
                    f"    ip daddr {_set(routes)} {match + ' ' if match else ''}"
                    f"counter name {ACCEPT_REASON}_{tag} meta mark set {GRANT_MARK:#x} accept"
                )
            if grant.acl != ACL_ANY:  # conntrack decides (table ip): a reply, or acl_denied
                lines.append(f"    ip daddr {_set(routes)} meta mark set {mark:#x} accept")
                if not pending or pending[-1][0] != tag:
                    pending.append((tag, mark))
        if local.served:
            lines.append(f"    ip daddr {_set(local.served)} counter name route_denied_{tag} drop")
        lines.append(f"    counter name not_routed_{tag} drop")
        lines.append("  }")
    lines.append("}")
    lines += [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}"]
    if local.served:
        lines += [f"table ip {TABLE} {{", f"  counter {FORWARD_DENIED} {{}}"]
        for tag, _mark in pending:
            lines += [f"  counter acl_denied_{tag} {{}}", f"  counter {ACCEPT_REASON}_{tag} {{}}"]
        if pending:
            vmap = ", ".join(f"{mark:#x} : jump a_{tag}" for tag, mark in pending)
            lines += [
                "  chain prerouting {",
                "    type filter hook prerouting priority filter; policy accept;",
                f'    iifname "{dev}" meta mark vmap {{ {vmap} }}',
                "  }",
            ]
            for tag, _mark in pending:
                lines += [
                    f"  chain a_{tag} {{",
                    f"    ct state established,related counter name {ACCEPT_REASON}_{tag} "
                    f"meta mark set {GRANT_MARK:#x} accept",
                    f"    counter name acl_denied_{tag} drop",
                    "  }",
                ]
        lines += [
            "  chain forward {",
            "    type filter hook forward priority 0; policy accept;",
            f'    iifname "{dev}" meta mark != {GRANT_MARK:#x} counter name {FORWARD_DENIED} drop',
            "  }",
        ]
        if local.nat:
            lines += [
                "  chain postrouting {",
                "    type nat hook postrouting priority srcnat; policy accept;",
                f'    oifname != "{dev}" ip saddr {local.overlay.network} '
                f"ip daddr {_set(local.served)} masquerade",
                "  }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def teardown_script() -> str:
    """Remove both tables (safe when they do not exist)."""
    return (f"table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n"
            f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")


def parse_counters(listing: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """``nft -j list counters table netdev enclave_gw`` -> {peer tag: {reason: packets}}."""
    out: dict[str, dict[str, int]] = {}
    items = listing.get("nftables", []) if isinstance(listing, Mapping) else []
    reasons = sorted((*DROP_REASONS, ACCEPT_REASON), key=len, reverse=True)
    for item in items:
        c = item.get("counter") if isinstance(item, Mapping) else None
        if not isinstance(c, Mapping) or not isinstance(c.get("name"), str):
            continue
        name = c["name"]
        for reason in reasons:
            if name.startswith(reason + "_"):
                out.setdefault(name[len(reason) + 1 :], {})[reason] = int(c.get("packets", 0))
                break
        else:
            if name == FORWARD_DENIED:
                out.setdefault("", {})[FORWARD_DENIED] = int(c.get("packets", 0))
    return out


def merge_counters(*tables: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Sum ``parse_counters`` results of several tables (``routed`` is counted in both)."""
    out: dict[str, dict[str, int]] = {}
    for table in tables:
        for tag, values in table.items():
            mine = out.setdefault(tag, {})
            for reason, packets in values.items():
                mine[reason] = mine.get(reason, 0) + packets
    return out


# -- failover: which gateway carries each subnet ---------------------------------------------------


@dataclass
class RoutePlan:
    """prefix -> (gateway name, next hop): at most one active gateway per subnet. ``held``: the
    holders to pass to the next choose_active — the active ones, and the last holder of a subnet
    that no gateway is up for now, while that peer still offers it."""

    active: dict[Route, str] = field(default_factory=dict)
    via: dict[Route, ipaddress.IPv4Address] = field(default_factory=dict)
    held: dict[Route, str] = field(default_factory=dict)


def choose_active(peers: Iterable[PeerView], current: Mapping[Route, str]) -> RoutePlan:
    """Active/passive per subnet: keep the current holder (the previous plan's ``held``) while
    it is up and still serves the subnet — no flapping back when a preferred one returns (that
    would break NATed flows), nor to whichever gateway answers first after a moment when none
    did; otherwise the up gateway with the lowest (priority, name)."""
    peers = list(peers)
    plist = [p for p in peers if p.up and p.routes]
    by_name = {p.name: p for p in plist}
    prefixes = sorted({r for p in plist for r in p.routes})
    plan = RoutePlan()
    for prefix in prefixes:
        holder = current.get(prefix)
        if holder in by_name and prefix in by_name[holder].routes:
            chosen = by_name[holder]
        else:
            chosen = min((p for p in plist if prefix in p.routes),
                         key=lambda p: (p.offer.priority if p.offer else DEFAULT_PRIORITY, p.name))
        plan.active[prefix] = chosen.name
        plan.via[prefix] = chosen.overlay_ip
    offered = {p.name: p.routes for p in peers}
    plan.held = {r: n for r, n in current.items() if r in offered.get(n, ())}
    plan.held.update(plan.active)
    return plan


def route_changes(old: Mapping[Route, ipaddress.IPv4Address],
                  new: Mapping[Route, ipaddress.IPv4Address]
                  ) -> tuple[list[tuple[Route, ipaddress.IPv4Address]], list[Route]]:
    """(routes to add or replace, routes to delete) to go from ``old`` to ``new``."""
    put = [(r, v) for r, v in sorted(new.items()) if old.get(r) != v]
    gone = [r for r in sorted(old) if r not in new]
    return put, gone


# -- liveness: is a gateway still forwarding? ------------------------------------------------

PROBE_INTERVAL = 0.5  # seconds between echo probes to each gateway peer's overlay address
PROBE_MISSES = 3  # unanswered probes in a row before the gateway counts as down


@dataclass
class ProbeTracker:
    """Consecutive unanswered probes per gateway: down at ``misses``, up again on a reply.

    The platform's withdrawal covers a gateway that stops cleanly; this covers one that dies,
    hangs or loses its path (the control channel notices only after its heartbeats time out,
    the peer session after DEAD_PEER_TIMEOUT)."""

    misses: int = PROBE_MISSES
    outstanding: dict[str, int] = field(default_factory=dict)

    def sent(self, name: str) -> None:
        self.outstanding[name] = self.outstanding.get(name, 0) + 1

    def replied(self, name: str) -> None:
        self.outstanding[name] = 0

    def forget(self, name: str) -> None:
        self.outstanding.pop(name, None)

    def alive(self, name: str) -> bool:
        return self.outstanding.get(name, 0) < self.misses
