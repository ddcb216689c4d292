"""Stand-ins for DataPlane tests without a TAP device: the attributes engine.DataPlane reads
from a TapDevice, over any fd (typically one end of a socketpair); a native DataPlane over a
socketpair, or with several workers over socketpairs and loopback UDP sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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


@contextmanager
def workers_dataplane(workers: int, max_peers: int
                      ) -> Iterator[tuple[fp.DataPlane, list[socket.socket], list[socket.socket]]]:
    """A native DataPlane (AQM off, no thread started) whose worker i reads the TAP stand-in
    socketpair i and the UDP socket i (bound on 127.0.0.1, non-blocking): (the data plane,
    our ends of the TAP stand-ins, the UDP sockets); all closed when the block ends."""
    with ExitStack() as stack:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
        udps = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(workers)]
        for s in [*(x for pair in pairs for x in pair), *udps]:
            stack.enter_context(s)
        for (_ours, theirs), udp in zip(pairs, udps, strict=True):
            theirs.setblocking(False)
            udp.bind(("127.0.0.1", 0))
            udp.setblocking(False)
        dp = fp.DataPlane(pairs[0][1].fileno(), udps[0].fileno(), max_peers=max_peers,
                          aqm=False, queues=[(p[1].fileno(), u.fileno())
                                             for p, u in zip(pairs[1:], udps[1:], strict=True)])
        stack.callback(dp.close)
        yield dp, [ours for ours, _ in pairs], udps
