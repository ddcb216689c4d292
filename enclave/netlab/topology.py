"""Declarative lab topologies and their address plan (pure: no I/O).

A lab is one "internet" namespace routing between a public LAN and one uplink per site::

      public hosts (one netns each)                    198.18.0.0/24 public LAN
      platform 198.18.0.11   r1 198.18.0.12 ...
             |eth0                 |eth0
             +--------+   +--------+
                      |   |  (veth ports p1, p2, ... on bridge br0 = 198.18.0.1)
               +------+---+------------------------------------------+
               | inet netns: router, ip_forward=1                     |
               |  s1 198.18.1.254/24      s2 198.18.2.254/24   ...    |  <- site uplinks:
               +------+----------------------+-----------------------+     mtu + tc netem
                      |                      |                           on both ends
              wan 198.18.1.1/24      wan 198.18.2.1/24
               +------+-------+       +------+-------+
               | nat netns a  |       | nat netns b  |   nft table enclave_lab
               | (NatType)    |       |              |   (see nat.py)
               | lan 198.19.1.1/24 (bridge: h1, h2, ...)
               +--+--------+--+       +------+-------+
                  |eth0    |eth0             |eth0
                 a1        a2                b1      site hosts, 198.19.<k>.<10+i>/24
              198.19.1.11 198.19.1.12     198.19.2.11

Site k (1-based, in declaration order) owns the uplink 198.18.k.0/24 and the LAN 198.19.k.0/24.
The inet namespace routes 198.19.k.0/24 to the site only for sites without address translation
(NatType.NONE and NatType.FIREWALL), so a NATed LAN is unreachable from outside except through its
NAT, as on the real internet.

IPv6 (Site.ipv6, V6Mode; off by default). Every IPv6 address of a lab is in the documentation
range 2001:db8::/32 (RFC 3849) or, for NAT66 LANs, the unique-local range fd00::/8 (RFC 4193):
nothing a lab uses is routable outside its namespaces. Decimal-looking groups mirror the IPv4
plan (they are hex on the wire: "::11" is 0x11)::

    public LAN         2001:db8::/64            inet br0 ::1, public host i  ::(10+i)
    site k uplink      2001:db8:1:k::/64        router wan ::1, inet s<k> ::254
    site k LAN (open,  2001:db8:2:k::/64        routed by the inet namespace to the site;
      firewall)                                 gateway ::1, host i ::(10+i)
    site k LAN (nat66) fd00:0:0:k::/64          not routed: hosts appear as the router's wan
                                                address (masquerade: port-preserving, or a
                                                random port per destination for
                                                nat66-symmetric)

The public internet and the public hosts are dual-stack as soon as one site has IPv6 (or
Topology(ipv6=True)). A site with ``ipv4=False`` is IPv6-only: no IPv4 address on its hosts or
its router. Duplicate address detection is off in the lab (accept_dad=0, ``nodad``), so IPv6
addresses work at once; router advertisements and autoconfiguration are off (static plan).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

PUBLIC_LAN = ipaddress.IPv4Network("198.18.0.0/24")
INTERNET_GW = ipaddress.IPv4Address("198.18.0.1")
PUBLIC_LAN6 = ipaddress.IPv6Network("2001:db8::/64")
INTERNET_GW6 = ipaddress.IPv6Address("2001:db8::1")
LAB_V6_SPACE = (ipaddress.IPv6Network("2001:db8::/32"), ipaddress.IPv6Network("fd00::/8"))
MAX_SITES = 250
MAX_HOSTS_PER_SITE = 200
MAX_PUBLIC_HOSTS = 200
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_SITE_RE = re.compile(r"^[a-z][a-z0-9]{0,8}$")


class NatType(enum.StrEnum):
    """How a site's router treats traffic between its LAN and the internet.

    ============== ===================================== ===========================================
    type           mapping (public port per flow)        filtering of inbound packets
    ============== ===================================== ===========================================
    none           no translation (LAN is routed)        none: everything passes
    full-cone      endpoint-independent                  endpoint-independent (anyone, once mapped)
    restricted     endpoint-independent                  address-dependent
    port-restricted endpoint-independent                 address-and-port-dependent
    symmetric      endpoint-dependent (random per dest)  address-and-port-dependent
    firewall       no translation (LAN is routed)        stateful: only replies to outbound flows
    ============== ===================================== ===========================================

    full-cone and restricted apply to UDP; TCP behind them is port-restricted (plain conntrack).
    """

    NONE = "none"
    FULL_CONE = "full-cone"
    RESTRICTED = "restricted"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"
    FIREWALL = "firewall"

    @property
    def translates(self) -> bool:
        """True when the site's hosts appear on the internet under the router's address."""
        return self not in (NatType.NONE, NatType.FIREWALL)


class V6Mode(enum.StrEnum):
    """A site's IPv6: none, or a /64 behind one kind of router.

    ========= ========================================== ==========================================
    mode      LAN addresses                              inbound from the internet
    ========= ========================================== ==========================================
    off       none (an IPv4-only site)                   -
    open      global (2001:db8:2:k::/64), routed          everything passes
    firewall  global (2001:db8:2:k::/64), routed          stateful: replies (ct established,related)
                                                         only, unsolicited dropped -- the usual
                                                         home router; punchable
    nat66     unique-local (fd00:0:0:k::/64)              masquerade to the router's wan address
                                                         (endpoint-independent mapping), replies
                                                         only (port-restricted behaviour)
    nat66-    unique-local (fd00:0:0:k::/64)              masquerade fully-random: a new port per
    symmetric                                            destination (symmetric), replies only
    ========= ========================================== ==========================================
    """

    OFF = "off"
    OPEN = "open"
    FIREWALL = "firewall"
    NAT66 = "nat66"
    NAT66_SYMMETRIC = "nat66-symmetric"

    @property
    def translates(self) -> bool:
        """True when the site's hosts appear under the router's IPv6 address (NAT66)."""
        return self in (V6Mode.NAT66, V6Mode.NAT66_SYMMETRIC)


@dataclass(frozen=True)
class Netem:
    """tc netem impairments, applied on both directions of a site's uplink."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    reorder_pct: float = 0.0
    rate_mbit: float | None = None

    def __post_init__(self) -> None:
        for label, value in (
            ("delay_ms", self.delay_ms),
            ("jitter_ms", self.jitter_ms),
            ("loss_pct", self.loss_pct),
            ("reorder_pct", self.reorder_pct),
        ):
            if value < 0:
                raise ValueError(f"netem {label} must be >= 0, got {value}")
        if self.loss_pct > 100 or self.reorder_pct > 100:
            raise ValueError("netem percentages must be <= 100")
        if self.reorder_pct > 0 and self.delay_ms <= 0:
            raise ValueError("netem reorder needs a delay (reordered packets skip the delay)")
        if self.jitter_ms > 0 and self.delay_ms <= 0:
            raise ValueError("netem jitter needs a delay")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ValueError(f"netem rate_mbit must be > 0, got {self.rate_mbit}")

    def tc_args(self) -> list[str]:
        """Arguments after ``tc qdisc add dev X root netem``."""
        args: list[str] = []
        if self.delay_ms > 0:
            args += ["delay", f"{self.delay_ms:g}ms"]
            if self.jitter_ms > 0:
                args.append(f"{self.jitter_ms:g}ms")
        if self.loss_pct > 0:
            args += ["loss", f"{self.loss_pct:g}%"]
        if self.reorder_pct > 0:
            args += ["reorder", f"{self.reorder_pct:g}%"]
        if self.rate_mbit is not None:
            args += ["rate", f"{self.rate_mbit * 1000:g}kbit"]
        return args


@dataclass(frozen=True)
class Site:
    """A LAN of ``hosts`` hosts (named ``<name>1``, ``<name>2``, ...) behind one router."""

    name: str
    nat: NatType = NatType.PORT_RESTRICTED
    hosts: int = 1
    mtu: int = 1500
    netem: Netem | None = None
    lan_mtu: int = 1500
    block_udp: bool = False  # the router drops all forwarded UDP (Lab.block_udp lifts it)
    ipv6: V6Mode = V6Mode.OFF  # the site's IPv6 (V6Mode); off: IPv4-only
    ipv4: bool = True  # False: an IPv6-only site (needs ipv6 other than off)
    upnp: bool = False  # the router grants port mappings: miniupnpd (enclave.netlab.upnp)

    def __post_init__(self) -> None:
        if not _SITE_RE.match(self.name):
            raise ValueError(f"site name {self.name!r} must match {_SITE_RE.pattern}")
        if not isinstance(self.nat, NatType):
            raise ValueError(f"site {self.name}: nat must be a NatType, got {self.nat!r}")
        if not isinstance(self.ipv6, V6Mode):
            raise ValueError(f"site {self.name}: ipv6 must be a V6Mode, got {self.ipv6!r}")
        if not self.ipv4 and self.ipv6 is V6Mode.OFF:
            raise ValueError(f"site {self.name}: without IPv4 it needs ipv6 other than off")
        if not 1 <= self.hosts <= MAX_HOSTS_PER_SITE:
            raise ValueError(f"site {self.name}: hosts must be 1..{MAX_HOSTS_PER_SITE}")
        if self.upnp and not (self.ipv4 and self.nat.translates):
            raise ValueError(f"site {self.name}: upnp needs IPv4 and a translating NAT")
        for label, mtu in (("mtu", self.mtu), ("lan_mtu", self.lan_mtu)):
            if not 576 <= mtu <= 65535:
                raise ValueError(f"site {self.name}: {label} must be 576..65535, got {mtu}")

    def host_names(self) -> list[str]:
        return [f"{self.name}{i}" for i in range(1, self.hosts + 1)]


@dataclass(frozen=True)
class Topology:
    sites: list[Site] = field(default_factory=list)
    public_hosts: list[str] = field(default_factory=list)
    ipv6: bool = False  # dual-stack internet and public hosts even when no site has IPv6

    @property
    def ipv6_internet(self) -> bool:
        """Whether the internet namespace and the public hosts have IPv6."""
        return self.ipv6 or any(s.ipv6 is not V6Mode.OFF for s in self.sites)

    def __post_init__(self) -> None:
        if len(self.sites) > MAX_SITES:
            raise ValueError(f"at most {MAX_SITES} sites")
        if len(self.public_hosts) > MAX_PUBLIC_HOSTS:
            raise ValueError(f"at most {MAX_PUBLIC_HOSTS} public hosts")
        seen: set[str] = set()
        for site in self.sites:
            if site.name in seen:
                raise ValueError(f"duplicate site name {site.name!r}")
            seen.add(site.name)
        names: set[str] = set()
        for name in [*self.public_hosts, *(h for s in self.sites for h in s.host_names())]:
            if not _NAME_RE.match(name):
                raise ValueError(f"host name {name!r} must match {_NAME_RE.pattern}")
            if name in names:
                raise ValueError(f"duplicate host name {name!r}")
            names.add(name)
        if "inet" in names:
            raise ValueError("host name 'inet' is reserved")

    def to_dict(self) -> dict[str, object]:
        return {
            "public_hosts": list(self.public_hosts),
            "ipv6": self.ipv6,
            "sites": [
                {
                    "name": s.name,
                    "nat": s.nat.value,
                    "hosts": s.hosts,
                    "mtu": s.mtu,
                    "lan_mtu": s.lan_mtu,
                    "netem": None if s.netem is None else vars(s.netem).copy(),
                    "block_udp": s.block_udp,
                    "ipv6": s.ipv6.value,
                    "ipv4": s.ipv4,
                    "upnp": s.upnp,
                }
                for s in self.sites
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Topology:
        raw_sites = data.get("sites", [])
        raw_pub = data.get("public_hosts", [])
        if not isinstance(raw_sites, list) or not isinstance(raw_pub, list):
            raise ValueError("topology: sites and public_hosts must be lists")
        sites = []
        for raw in raw_sites:
            if not isinstance(raw, dict):
                raise ValueError("topology: each site must be an object")
            netem = raw.get("netem")
            sites.append(
                Site(
                    name=str(raw["name"]),
                    nat=NatType(raw.get("nat", NatType.PORT_RESTRICTED.value)),
                    hosts=int(raw.get("hosts", 1)),
                    mtu=int(raw.get("mtu", 1500)),
                    lan_mtu=int(raw.get("lan_mtu", 1500)),
                    netem=None if netem is None else Netem(**netem),
                    block_udp=bool(raw.get("block_udp", False)),
                    ipv6=V6Mode(raw.get("ipv6", V6Mode.OFF.value)),
                    ipv4=bool(raw.get("ipv4", True)),
                    upnp=bool(raw.get("upnp", False)),
                )
            )
        return cls(sites=sites, public_hosts=[str(h) for h in raw_pub],
                   ipv6=bool(data.get("ipv6", False)))


# ---- address plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SitePlan:
    index: int  # 1-based
    site: Site
    uplink_router: ipaddress.IPv4Interface  # 198.18.k.1/24, the site's "wan"
    uplink_inet: ipaddress.IPv4Interface  # 198.18.k.254/24, the ISP side
    lan_gw: ipaddress.IPv4Interface  # 198.19.k.1/24
    hosts: dict[str, ipaddress.IPv4Interface]  # name -> 198.19.k.(10+i)/24
    uplink_router6: ipaddress.IPv6Interface  # 2001:db8:1:k::1/64 (used when site.ipv6 is on)
    uplink_inet6: ipaddress.IPv6Interface  # 2001:db8:1:k::254/64
    lan_gw6: ipaddress.IPv6Interface  # 2001:db8:2:k::1/64, or fd00:0:0:k::1/64 (nat66)
    hosts6: dict[str, ipaddress.IPv6Interface]  # name -> LAN6 ::(10+i)/64

    @property
    def lan(self) -> ipaddress.IPv4Network:
        return self.lan_gw.network

    @property
    def lan6(self) -> ipaddress.IPv6Network:
        return self.lan_gw6.network


def plan_site(index: int, site: Site) -> SitePlan:
    if not 1 <= index <= MAX_SITES:
        raise ValueError(f"site index must be 1..{MAX_SITES}")
    up = f"198.18.{index}"
    lan = f"198.19.{index}"
    lan6 = f"fd00:0:0:{index}" if site.ipv6.translates else f"2001:db8:2:{index}"
    return SitePlan(
        index=index,
        site=site,
        uplink_router=ipaddress.IPv4Interface(f"{up}.1/24"),
        uplink_inet=ipaddress.IPv4Interface(f"{up}.254/24"),
        lan_gw=ipaddress.IPv4Interface(f"{lan}.1/24"),
        hosts={
            name: ipaddress.IPv4Interface(f"{lan}.{10 + i}/24")
            for i, name in enumerate(site.host_names(), start=1)
        },
        uplink_router6=ipaddress.IPv6Interface(f"2001:db8:1:{index}::1/64"),
        uplink_inet6=ipaddress.IPv6Interface(f"2001:db8:1:{index}::254/64"),
        lan_gw6=ipaddress.IPv6Interface(f"{lan6}::1/64"),
        hosts6={
            name: ipaddress.IPv6Interface(f"{lan6}::{10 + i}/64")
            for i, name in enumerate(site.host_names(), start=1)
        },
    )


def plan_public(topology: Topology) -> dict[str, ipaddress.IPv4Interface]:
    return {
        name: ipaddress.IPv4Interface(f"198.18.0.{10 + i}/24")
        for i, name in enumerate(topology.public_hosts, start=1)
    }


def plan_public6(topology: Topology) -> dict[str, ipaddress.IPv6Interface]:
    """Public hosts' IPv6 addresses (used when topology.ipv6_internet)."""
    return {
        name: ipaddress.IPv6Interface(f"2001:db8::{10 + i}/64")
        for i, name in enumerate(topology.public_hosts, start=1)
    }
