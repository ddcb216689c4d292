"""`enclave ping NAME`: authenticated PING/PONG through the overlay session (`tailscale ping`).

    enclave ping BBBBB -c 3
        |  local API {"cmd": "ping", "args": {"peer": "BBBBB", "timeout": 2.0}}  (once per ping)
        v
    Agent -> ping_peer() -> ConnectionManager.ping() -> Node.send_ping() -> PING in the session
          <-  {"peer", "ok", "path", "endpoint", "rtt_ms", "overlay_ip"}  <- authenticated PONG

A name the platform did not introduce (no mutual intent, or no such system) is refused at once
(LocalApiError); an introduced peer without a session, or no PONG in time, is a failed ping.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, Protocol

from enclave.agent.localapi import LocalApiError

DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 30.0
MIN_TIMEOUT = 0.05


class PingTarget(Protocol):
    def peers(self) -> list[dict[str, Any]]: ...

    async def ping(self, peer: str, timeout: float) -> dict[str, Any] | None: ...


def ping_args(args: dict[str, Any]) -> tuple[str, float]:
    """(peer name upper-cased, timeout clamped to MIN_TIMEOUT..MAX_TIMEOUT) from a request."""
    peer = args.get("peer")
    if not isinstance(peer, str) or not peer or len(peer) > 64 or not peer.isascii():
        raise LocalApiError("ping needs a peer name")
    raw = args.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
        raise LocalApiError("ping timeout must be a number of seconds")
    return peer.upper(), min(MAX_TIMEOUT, max(MIN_TIMEOUT, float(raw)))


async def ping_peer(cm: PingTarget | None, introduced: Container[str],
                    args: dict[str, Any]) -> dict[str, Any]:
    """The local API's "ping" call: one PING to an introduced peer and what came back."""
    peer, timeout = ping_args(args)
    if peer not in introduced:
        raise LocalApiError(f"{peer} is not a peer of this system (not introduced by the "
                            "platform: no mutual intent, or no such system)")
    if cm is None:
        raise LocalApiError("this agent runs without a data plane (--no-tap): no sessions to "
                            "ping over")
    info = next((p for p in cm.peers() if p.get("name") == peer), None)
    out: dict[str, Any] = {
        "peer": peer,
        "overlay_ip": None if info is None else info.get("overlay_ip"),
        "ok": False,
        "path": None,
        "endpoint": None,
        "rtt_ms": None,
        "error": None,
    }
    state = None if info is None else info.get("state")
    if state != "connected":
        out["error"] = f"no session ({state or 'not started'})"
        return out
    got = await cm.ping(peer, timeout)
    if got is None:
        out["error"] = f"no reply within {timeout:g}s"
        return out
    out.update(got)
    out["ok"] = True
    return out


def format_pong(result: dict[str, Any]) -> str:
    """One line per ping, as `tailscale ping` prints it."""
    name = result.get("peer") or "?"
    ip = result.get("overlay_ip")
    who = f"{name} ({ip})" if ip else str(name)
    if not result.get("ok"):
        return f"no pong from {who}: {result.get('error') or 'no reply'}"
    return (f"pong from {who} via {result.get('path') or '?'} {result.get('endpoint') or '?'} "
            f"in {float(result.get('rtt_ms') or 0.0):.2f}ms")
