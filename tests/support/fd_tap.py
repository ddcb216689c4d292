"""Stand-ins for DataPlane tests without a TAP device: the attributes engine.DataPlane reads
from a TapDevice, over any fd (typically one end of a socketpair); a native DataPlane over a
socketpair."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from enclave import _fastpath as fp


@dataclass
class FdTap:
    """The attributes engine.DataPlane reads from a TapDevice, over a socketpair end."""

    fd: int
    mtu: int = 1400
    vnet_hdr: bool = False
    offload: int = 0
    netns: str | None = None

    @property
    def fds(self) -> list[int]:
        """One queue: one data-plane worker."""
        return [self.fd]


@contextmanager
def socketpair_dataplane(max_peers: int) -> Iterator[fp.DataPlane]:
    """A native DataPlane over the two ends of a Unix datagram socketpair (stand-ins for the
    TAP and UDP fds; no thread started); closed, and its sockets, when the block ends."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        dp = fp.DataPlane(a.fileno(), b.fileno(), max_peers=max_peers)
        try:
            yield dp
        finally:
            dp.close()
    finally:
        a.close()
        b.close()
