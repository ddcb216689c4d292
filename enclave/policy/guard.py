"""The data port guard as nftables text (pure; enclave.agent.guard applies it).

Only introduced peers may open TCP to the agent's data port: a stranger's SYN is dropped before
the listener sees it, so it gets neither a SYN-ACK nor an RST (a port scan finds nothing).

    table inet enclave_guard_<port>                       one table per data port, the agent's own
      set peers4 { type ipv4_addr }  set peers6 { ... }   introduced peers' candidate addresses
      chain input (hook input, priority filter - 10)
        tcp dport <port> ct state established,related accept   replies to our own connects
                                                          (TCP reflection, simultaneous open)
        tcp dport <port> ip  saddr @peers4 accept
        tcp dport <port> ip6 saddr @peers6 accept
        tcp dport <port> counter drop                     everything else, silently
        ip daddr <overlay IP> iifname != { "lo", "<tap>" } counter drop
                                                          (with an overlay: see below)
        ip6 daddr <overlay IPv6> iifname != { "lo", "<tap>" } counter drop
                                                          (the same for its overlay IPv6)

The overlay rule: Linux takes a packet for any local address on any interface, so a LAN
neighbour that routes the overlay range to this host's LAN address would reach whatever listens
on the overlay IP (the agent's DNS, `--metrics` on the overlay IP, a service bound there for
peers only). The overlay IP answers only what comes through the TAP (peers) or from this host;
so does the overlay IPv6 (enclave.cert.overlay6), where a LAN neighbour could route the org's
ULA /64 to this host the same way.

The whole table is replaced atomically (one `nft -f -` script: create, delete, re-create) when
the address set changes; the agent's exit deletes it, and the next start deletes a table a
crashed agent left behind on the same port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

TABLE_PREFIX = "enclave_guard"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class Overlay:
    """The TAP device and the overlay addresses it holds (reachable only through it)."""

    iface: str
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address | None = None

    def __post_init__(self) -> None:
        if not _IFNAME.fullmatch(self.iface):
            raise ValueError(f"not an interface name: {self.iface!r}")


def table_name(port: int) -> str:
    if not 0 < port < 65536:
        raise ValueError("port must be 1..65535")
    return f"{TABLE_PREFIX}_{port}"


def parse_hosts(hosts: Iterable[str]) -> set[IPAddress]:
    """The IP literals among `hosts` (anything else is skipped: names are never resolved)."""
    out: set[IPAddress] = set()
    for h in hosts:
        try:
            addr = ipaddress.ip_address(h)
        except ValueError:
            continue
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        out.add(addr)
    return out


def teardown_script(port: int) -> str:
    """Remove the guard table (safe when it does not exist)."""
    t = table_name(port)
    return f"table inet {t} {{}}\ndelete table inet {t}\n"


def _overlay_rule(overlay: Overlay) -> str:
    devices = f'{{ "lo", "{overlay.iface}" }}'
    rule = f"    ip daddr {overlay.address} iifname != {devices} counter drop\n"
    if overlay.address6 is not None:
        rule += f"    ip6 daddr {overlay.address6} iifname != {devices} counter drop\n"
    return rule


def ruleset(port: int, allowed: Iterable[IPAddress], overlay: Overlay | None = None) -> str:
    """The whole guard table for `port` admitting TCP only from `allowed`; with `overlay`, its
    address also drops what arrives by another interface than the TAP or loopback."""
    v4 = sorted(str(a) for a in allowed if a.version == 4)
    v6 = sorted(str(a) for a in allowed if a.version == 6)
    t = table_name(port)

    def elements(items: list[str]) -> str:
        return f" elements = {{ {', '.join(items)} }};" if items else ""

    return (
        teardown_script(port)
        + f"table inet {t} {{\n"
        + f"  set peers4 {{ type ipv4_addr;{elements(v4)} }}\n"
        + f"  set peers6 {{ type ipv6_addr;{elements(v6)} }}\n"
        + "  chain input {\n"
        + "    type filter hook input priority filter - 10; policy accept;\n"
        + f"    tcp dport {port} ct state established,related accept\n"
        + f"    tcp dport {port} ip saddr @peers4 accept\n"
        + f"    tcp dport {port} ip6 saddr @peers6 accept\n"
        + f"    tcp dport {port} counter drop\n"
        + (_overlay_rule(overlay) if overlay is not None else "")
        + "  }\n"
        + "}\n"
    )
