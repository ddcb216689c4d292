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
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

PUBLIC_LAN = ipaddress.IPv4Network("198.18.0.0/24")
INTERNET_GW = ipaddress.IPv4Address("198.18.0.1")
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

    def __post_init__(self) -> None:
        if not _SITE_RE.match(self.name):
            raise ValueError(f"site name {self.name!r} must match {_SITE_RE.pattern}")
        if not isinstance(self.nat, NatType):
            raise ValueError(f"site {self.name}: nat must be a NatType, got {self.nat!r}")
        if not 1 <= self.hosts <= MAX_HOSTS_PER_SITE:
            raise ValueError(f"site {self.name}: hosts must be 1..{MAX_HOSTS_PER_SITE}")
        for label, mtu in (("mtu", self.mtu), ("lan_mtu", self.lan_mtu)):
            if not 576 <= mtu <= 65535:
                raise ValueError(f"site {self.name}: {label} must be 576..65535, got {mtu}")

    def host_names(self) -> list[str]:
        return [f"{self.name}{i}" for i in range(1, self.hosts + 1)]


@dataclass(frozen=True)
class Topology:
    sites: list[Site] = field(default_factory=list)
    public_hosts: list[str] = field(default_factory=list)

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
            "sites": [
                {
                    "name": s.name,
                    "nat": s.nat.value,
                    "hosts": s.hosts,
                    "mtu": s.mtu,
                    "lan_mtu": s.lan_mtu,
                    "netem": None if s.netem is None else vars(s.netem).copy(),
                    "block_udp": s.block_udp,
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
                )
            )
        return cls(sites=sites, public_hosts=[str(h) for h in raw_pub])


# ---- address plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SitePlan:
    index: int  # 1-based
    site: Site
    uplink_router: ipaddress.IPv4Interface  # 198.18.k.1/24, the site's "wan"
    uplink_inet: ipaddress.IPv4Interface  # 198.18.k.254/24, the ISP side
    lan_gw: ipaddress.IPv4Interface  # 198.19.k.1/24
    hosts: dict[str, ipaddress.IPv4Interface]  # name -> 198.19.k.(10+i)/24

    @property
    def lan(self) -> ipaddress.IPv4Network:
        return self.lan_gw.network


def plan_site(index: int, site: Site) -> SitePlan:
    if not 1 <= index <= MAX_SITES:
        raise ValueError(f"site index must be 1..{MAX_SITES}")
    up = f"198.18.{index}"
    lan = f"198.19.{index}"
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
    )


def plan_public(topology: Topology) -> dict[str, ipaddress.IPv4Interface]:
    return {
        name: ipaddress.IPv4Interface(f"198.18.0.{10 + i}/24")
        for i, name in enumerate(topology.public_hosts, start=1)
    }
