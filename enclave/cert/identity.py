"""SystemIdentity: what a verified system certificate says about its holder."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from enclave.cert.overlay6 import PREFIX_LEN


@dataclass(frozen=True)
class SystemIdentity:
    name: str  # short unique base32 system name, e.g. "V88RY"
    org: str
    overlay_ip: ipaddress.IPv4Address
    overlay_prefix: int  # prefix length of the org's overlay range (e.g. 10 for 100.64.0.0/10)
    mac: bytes  # 6 bytes, locally administered unicast, derived from the name
    tags: tuple[str, ...]
    public_key: bytes  # raw 32-byte Ed25519 public key
    serial: int
    not_before: datetime.datetime  # tz-aware UTC
    not_after: datetime.datetime
    gateway_routes: tuple[ipaddress.IPv4Network, ...] = ()  # empty unless allowed to be a gateway
    # derived from the CA key and overlay_ip at verification (enclave.cert.overlay6), not a field
    # of the certificate; None only for an identity built by hand
    overlay_ip6: ipaddress.IPv6Address | None = None

    @property
    def overlay_interface(self) -> ipaddress.IPv4Interface:
        """The overlay address with the org prefix, e.g. 100.64.12.7/10 (for the TAP device)."""
        return ipaddress.IPv4Interface(f"{self.overlay_ip}/{self.overlay_prefix}")

    @property
    def overlay_interface6(self) -> ipaddress.IPv6Interface | None:
        """The overlay IPv6 with the org's /64 (for the TAP), or None without one."""
        if self.overlay_ip6 is None:
            return None
        return ipaddress.IPv6Interface((self.overlay_ip6, PREFIX_LEN))

    @property
    def overlay_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The overlay's IPv4 range, and the org's overlay IPv6 /64 when there is one."""
        v6 = self.overlay_interface6
        v4 = self.overlay_interface.network
        return (v4,) if v6 is None else (v4, v6.network)
