"""A free TCP port on this host, for a process or server that is started next (throwaway
PostgreSQL clusters, bench platforms, tests). Another process may take it first: callers that
cannot retry bind to port 0 instead."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing is bound to at this moment."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
