"""nftables rulesets that make a site router behave as one NAT type (pure: returns text).

One table ``ip enclave_lab`` per router namespace. Interfaces: ``wan`` (uplink to the internet
namespace) and ``lan`` (bridge of the site's hosts). Conntrack state is per namespace, so every
site has its own NAT state.

How each type is built (verified by tests/netlab/test_netlab_nat.py with real UDP/TCP probes)::

  port-restricted  srcnat: masquerade. Linux keeps the source port when the tuple is free, and
                   reuses it for every destination (endpoint-independent mapping); conntrack lets
                   in only packets matching the exact reverse tuple (address+port filtering).
  symmetric        srcnat: masquerade fully-random: every new flow (new destination) gets a fresh
                   random public port; filtering as above.
  restricted       UDP: mapping pinned per inside endpoint by two dynamic maps learned from
                   outbound packets after NAT (postrouting, priority srcnat+10):
                     eim_out[inside ip . inside port] = public port   (re-used for new destinations)
                     eim_in[public port] = inside ip . inside port    (where inbound goes)
                     peers{public port . remote ip}                   (who may send in)
                   dstnat: a new inbound flow to public port P from address A is DNATed to
                   eim_in[P] only if (P, A) is in peers -> address-dependent filtering.
  full-cone        as restricted, without the peers check -> endpoint-independent filtering: once
                   an inside endpoint has sent anything, anyone may reach it on its public port.
  firewall         no NAT; forward: replies (ct established,related) in, new inbound dropped.
  none             no table: plain router.

Entries expire 60 s after the last outbound packet of the mapping (like a home router's UDP
timeout). Unsolicited packets to the router's own address are dropped silently (no ICMP), as
CPE NATs do. No hairpinning.

IPv6 (topology.V6Mode) has a table of its own, ``ip6 enclave_lab6`` (ruleset6)::

  open      no table: the LAN's global /64 is routed, nothing filtered.
  firewall  forward: replies (ct established,related) in, new inbound dropped -- RFC 6092's
            "simple security" as home routers ship it; both sides sending first punches it.
  nat66     as firewall, plus srcnat masquerade on wan (the LAN is unique-local; Linux keeps
            the source port, so the mapping is endpoint-independent) and an input chain that
            drops unsolicited packets to the router's own address (ICMPv6 passes: neighbour
            discovery and packet-too-big need it).
  nat66-symmetric  as nat66 with ``masquerade fully-random``: a new public port per flow.

The UDP block (block_udp_ruleset) is an ``inet`` table: it drops IPv4 and IPv6 UDP alike.
"""

from __future__ import annotations

import ipaddress

from enclave.netlab.topology import NatType, V6Mode

TABLE = "enclave_lab"
TABLE6 = "enclave_lab6"
BLOCK_TABLE = "enclave_block"  # a site that drops UDP (offices, hotels): a table of its own
WAN = "wan"
LAN = "lan"
MAPPING_TIMEOUT_S = 60


def block_udp_ruleset() -> str:
    """The nft script that makes a router drop every UDP packet it forwards, both ways, IPv4 and
    IPv6 (the LAN's own traffic and TCP pass).  Deleting table inet BLOCK_TABLE lifts it."""
    return (f"table inet {BLOCK_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter - 10; policy accept;\n"
            "    meta l4proto udp drop\n"
            "  }\n"
            "}\n")


def ruleset(nat: NatType, public_ip: ipaddress.IPv4Address) -> str:
    """The nft script for a router of type ``nat`` whose WAN address is ``public_ip``.

    Returns "" for NatType.NONE (nothing to load).
    """
    if nat is NatType.NONE:
        return ""
    cone = nat in (NatType.FULL_CONE, NatType.RESTRICTED)
    lines: list[str] = [f"table ip {TABLE} {{"]
    if cone:
        t = f"flags dynamic,timeout; timeout {MAPPING_TIMEOUT_S}s;"
        lines += [
            f"  map eim_out {{ type ipv4_addr . inet_service : inet_service; {t} }}",
            f"  map eim_in {{ type inet_service : ipv4_addr . inet_service; {t} }}",
            f"  set peers {{ type inet_service . ipv4_addr; {t} }}",
        ]
    if nat.translates:
        lines += [
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            f'    iifname "{WAN}" ct state established,related accept',
            f'    iifname "{WAN}" icmp type echo-request accept',
            f'    iifname "{WAN}" drop',
            "  }",
        ]
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{WAN}" ct state established,related accept',
    ]
    if cone:
        lines.append(f'    iifname "{WAN}" ct status dnat accept')
    lines += [f'    iifname "{WAN}" drop', "  }"]
    if not nat.translates:
        lines.append("}")
        return "\n".join(lines) + "\n"

    masq = "masquerade fully-random" if nat is NatType.SYMMETRIC else "masquerade"
    lines += [
        "  chain srcnat {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    if cone:
        lines.append(
            f'    oifname "{WAN}" meta l4proto udp '
            f"snat ip to {public_ip} : ip saddr . udp sport map @eim_out"
        )
    lines += [f'    oifname "{WAN}" {masq}', "  }"]
    if cone:
        allow = "udp dport . ip saddr @peers " if nat is NatType.RESTRICTED else ""
        lines += [
            "  chain dstnat {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            f'    iifname "{WAN}" meta l4proto udp {allow}dnat ip to udp dport map @eim_in',
            "  }",
            "  chain learn {",
            "    type filter hook postrouting priority srcnat + 10; policy accept;",
            f'    oifname "{WAN}" meta l4proto udp ct direction original '
            "update @eim_out { ct original ip saddr . ct original proto-src : ct reply proto-dst }",
            f'    oifname "{WAN}" meta l4proto udp ct direction original '
            "update @eim_in { ct reply proto-dst : ct original ip saddr . ct original proto-src }",
            f'    oifname "{WAN}" meta l4proto udp ct direction original '
            "update @peers { ct reply proto-dst . ip daddr }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def ruleset6(mode: V6Mode) -> str:
    """The nft script for a router whose IPv6 is `mode` ("" for off and open: nothing to load)."""
    if mode in (V6Mode.OFF, V6Mode.OPEN):
        return ""
    lines = [f"table ip6 {TABLE6} {{"]
    if mode.translates:
        lines += [
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            f'    iifname "{WAN}" ct state established,related accept',
            f'    iifname "{WAN}" meta l4proto ipv6-icmp accept',
            f'    iifname "{WAN}" drop',
            "  }",
        ]
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{WAN}" ct state established,related accept',
        f'    iifname "{WAN}" drop',
        "  }",
    ]
    if mode.translates:
        masq = "masquerade fully-random" if mode is V6Mode.NAT66_SYMMETRIC else "masquerade"
        lines += [
            "  chain srcnat {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    oifname "{WAN}" {masq}',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"
