"""`enclave status` as text, the way `tailscale status` reads (pure: dicts in, lines out).

    name         V88RY (acme)
    overlay ip   100.64.0.7
    overlay ip6  fd5e:1c2d:9a0b::6440:7      (when the agent derives one: enclave.cert.overlay6)
    ...
    peers        2

    PEER    OVERLAY IP    PATH        ENDPOINT              RTT      HANDSHAKE  RX       TX
    488Q    100.64.0.9    direct-udp  198.18.2.1:51820      1.2ms    35s ago    1.4 MiB  220 KiB
    7KD3X   -             -           -                     -        -          -        -

The inputs are the local API's "status" and "peers" results (`enclave status --json` keeps
printing the "status" result as it is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | float | None) -> str:
    """1536 -> "1.5 KiB"; None -> "-"."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(then: float | None, now: float) -> str:
    """Seconds between two Unix times, as "35s ago", "4m ago", "2h ago", "3d ago"; "-" if None."""
    if then is None:
        return "-"
    age = max(0.0, now - then)
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if age < limit:
            return f"{int(age // div)}{unit} ago"
    return f"{int(age // 86400)}d ago"


def human_rtt(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.2f}ms" if ms < 10 else f"{ms:.1f}ms" if ms < 100 else f"{ms:.0f}ms"


def portmap_text(portmap: Mapping[str, Any] | None) -> str:
    """The `port mapping` line: off (--no-portmap), the mapped address, or why there is none."""
    if portmap is None:
        return "off"
    m = portmap.get("mapping")
    if not m:
        return f"none ({portmap.get('last_error') or 'asking'})"
    return f"{m.get('external')} -> udp :{m.get('internal_port')} via {m.get('method')}"


def _v6_off(status: Mapping[str, Any]) -> str:
    """A note when the TAP does not hold the overlay IPv6 (IPv6 switched off on this host)."""
    dp = status.get("dataplane") or {}
    return " (not on the TAP: IPv6 is off)" if dp and not dp.get("address6") else ""


def self_lines(status: Mapping[str, Any]) -> list[str]:
    plat = status.get("platform") or {}
    mappings = status.get("mappings") or {}
    udp = ", ".join(m or "-" for m in mappings.get("udp") or []) or "-"
    err = plat.get("last_error")
    dp = status.get("dataplane") or {}
    lines = [
        f"name         {status.get('name')} ({status.get('org')})",
        f"overlay ip   {status.get('overlay_ip')}",
        *([f"overlay ip6  {status['overlay_ip6']}" + _v6_off(status)]
          if status.get("overlay_ip6") else []),
        f"certificate  expires {status.get('cert_expires')}",
        f"platform     {plat.get('url')} {plat.get('state')}" + (f" ({err})" if err else ""),
        f"mappings     udp {udp}; tcp {mappings.get('tcp') or '-'}",
        f"nat          {status.get('nat')}",
        f"port mapping {portmap_text(status.get('portmap'))}",
        f"peers        {status.get('peers')}",
    ]
    if dp:
        lines.append(f"data plane   {dp.get('tap')}, {dp.get('threads', 1)} worker(s), "
                     f"cipher {dp.get('cipher') or '-'}, aqm {'on' if dp.get('aqm') else 'off'}")
    return lines


_HEADER = ("PEER", "OVERLAY IP", "PATH", "PATH SINCE", "ENDPOINT", "RTT", "HANDSHAKE", "RX",
           "TX")


def peer_row(peer: Mapping[str, Any], now: float) -> tuple[str, ...]:
    connected = peer.get("state") == "connected"
    path = peer.get("path") if connected else (peer.get("state") or "-")
    return (
        str(peer.get("name") or "?"),
        str(peer.get("overlay_ip") or "-"),
        str(path or "-"),
        # when the session last moved to another path (or came up on this one)
        human_age(peer.get("path_changed_at") or peer.get("connected_at"), now)
        if connected else "-",
        str(peer.get("endpoint") or "-") if connected else "-",
        human_rtt(peer.get("rtt_ms")) if connected else "-",
        human_age(peer.get("last_handshake_at") or peer.get("connected_at"), now),
        human_bytes(peer.get("rx_bytes")),
        human_bytes(peer.get("tx_bytes")),
    )


def peer_lines(peers: Sequence[Mapping[str, Any]], now: float) -> list[str]:
    """A header and one aligned line per peer; [] when there are none."""
    if not peers:
        return []
    rows = [_HEADER, *(peer_row(p, now) for p in peers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def status_text(status: Mapping[str, Any], peers: Sequence[Mapping[str, Any]],
                now: float) -> str:
    lines = self_lines(status)
    table = peer_lines(peers, now)
    if table:
        lines += ["", *table]
    return "\n".join(lines)
