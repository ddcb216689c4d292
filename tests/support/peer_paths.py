"""Waiting for a lab agent's session with a peer to be up on a given path (lan, direct-udp,
direct-tcp, relay-udp, relay-tls)."""

from __future__ import annotations

from typing import Any

from tests.support.lab import Agent
from tests.support.wait import wait_for


def on_path(a: Agent, b: Agent, path: str) -> dict[str, Any] | None:
    """a's connected peer entry for b when its path is `path`, else None."""
    p = a.connected(b.name)
    return p if p is not None and p["path"] == path else None


def connected_on(a: Agent, b: Agent, path: str, timeout: float) -> dict[str, Any]:
    """Wait until a's session with b is up on `path`; its peer entry."""
    got = wait_for(lambda: on_path(a, b, path), timeout=timeout, interval=0.3,
                   what=f"{a.host.name} -> {b.host.name} {path}")
    assert got is not None
    return got
