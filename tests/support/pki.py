"""The test PKI: a real Ed25519 CA (enclave.cert) issuing real X.509 system certificates.

One home for the connection tests (real sockets, wall clock) and the in-memory peer tests
(simulated clock):

    Pki()            clock() is the wall clock at each call
    Pki(now=T0)      clock() is pki.now; a test moves time by assigning pki.now

The CA is valid from a day before clock(); a certificate from five minutes before it (or
`start`) for `lifetime`, with the next free overlay address in 100.64.0.0/10.
`validate(der)` checks a certificate at clock() against the CA and `revoked` (serials).
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.cert import (
    CertificateError,
    SystemIdentity,
    create_ca,
    issue_system_certificate,
    verify_system_certificate,
)

SKEW = dt.timedelta(minutes=5)  # certificates start this long before clock()


class Pki:
    """A real CA; `now=None` follows the wall clock, a datetime pins a simulated clock."""

    def __init__(self, org: str = "acme", *, now: dt.datetime | None = None) -> None:
        self.org = org
        self.now = now
        self.ca_key, self.ca = create_ca(org, now=self.clock() - dt.timedelta(days=1))
        self.revoked: set[int] = set()
        self._next = 10

    def clock(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) if self.now is None else self.now

    def issue(
        self,
        name: str,
        *,
        lifetime: dt.timedelta = dt.timedelta(days=30),
        start: dt.datetime | None = None,
    ) -> tuple[Ed25519PrivateKey, bytes, int]:
        """(private key, certificate DER, serial) for system `name`."""
        key = Ed25519PrivateKey.generate()
        self._next += 1
        cert = issue_system_certificate(
            self.ca_key,
            self.ca,
            key.public_key(),
            name=name,
            org=self.org,
            overlay_ip=ipaddress.IPv4Address(f"100.64.{self._next // 250}.{self._next % 250 + 1}"),
            overlay_prefix=10,
            now=self.clock() - SKEW if start is None else start,
            lifetime=lifetime,
        )
        return key, cert.public_bytes(Encoding.DER), cert.serial_number

    def validate(self, der: bytes) -> SystemIdentity | None:
        """The certificate's identity if the CA vouches for it now and it is not revoked."""
        try:
            return verify_system_certificate(
                der, self.ca, now=self.clock(), revoked_serials=self.revoked
            )
        except CertificateError:
            return None
