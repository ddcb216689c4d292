"""A stand-in TAP for DataPlane tests without a TAP device: the attributes engine.DataPlane
reads from a TapDevice, over any fd (typically one end of a socketpair)."""

from __future__ import annotations

from dataclasses import dataclass


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
