"""The platform's CA at run time: loads the CA key (decrypted in memory only), issues system
certificates for the store, and builds the signed revocation list."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enclave.cert.ca import issue_system_certificate
from enclave.cert.crl import RevokedEntry, build_crl
from enclave.platform.errors import ApiError
from enclave.platform.paths import PlatformPaths
from enclave.platform.store import IssuedCert, Issuer, Store, System
from enclave.proto.wire import MAX_CERT_SIZE

# The largest serial issue_system_certificate may draw (20 octets, positive): a dry run with it
# measures the longest DER the real certificate can have.
_MAX_SERIAL = (1 << 159) - 1


class CertificateTooLarge(ValueError):
    """A system's certificate would not fit the handshake (wire.MAX_CERT_SIZE bytes)."""


@contextlib.contextmanager
def refused_if_too_large(status: int) -> Iterator[None]:
    """HTTP handlers: CertificateTooLarge becomes an ApiError(status) with its reason."""
    try:
        yield
    except CertificateTooLarge as exc:
        raise ApiError(status, str(exc)) from None


def _too_large(system: System, size: int) -> CertificateTooLarge:
    return CertificateTooLarge(
        f"system {system.name}: its certificate would be {size} bytes, more than the "
        f"{MAX_CERT_SIZE} a handshake carries in one datagram; use fewer or shorter tags or "
        f"fewer gateway routes (about 20 routes fit)")


def certificate_fits(ca_cert: x509.Certificate, org: str,
                     overlay_prefix: int) -> Callable[[System], None]:
    """A check for Store.set_tags / Store.set_gateway: raises CertificateTooLarge when the
    certificate ``system`` would be issued next exceeds MAX_CERT_SIZE. A dry run with the CA's
    certificate (no CA key needed: an Ed25519 signature is 64 bytes whatever the key) and the
    largest possible serial, so the answer holds for the real issuance."""
    scratch = Ed25519PrivateKey.generate()

    def check(system: System) -> None:
        now = datetime.datetime.now(datetime.UTC)
        cert = issue_system_certificate(
            scratch, ca_cert, Ed25519PublicKey.from_public_bytes(system.public_key),
            name=system.name, org=org, overlay_ip=system.overlay_ip,
            overlay_prefix=overlay_prefix, tags=system.tags,
            gateway_routes=system.gateway_routes, now=now,
            lifetime=datetime.timedelta(seconds=system.cert_lifetime), serial=_MAX_SERIAL)
        size = len(cert.public_bytes(serialization.Encoding.DER))
        if size > MAX_CERT_SIZE:
            raise _too_large(system, size)

    return check

_REASONS = {
    "hold": x509.ReasonFlags.certificate_hold,
    "cessation": x509.ReasonFlags.cessation_of_operation,
    "compromise": x509.ReasonFlags.key_compromise,
}


def _utc(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


@dataclass
class Authority:
    org: str
    overlay_prefix: int
    ca_key: Ed25519PrivateKey = field(repr=False)
    ca_cert: x509.Certificate
    _crl_cache: tuple[int, int, bytes] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, paths: PlatformPaths, org: str, overlay_prefix: int) -> Authority:
        ca_cert = paths.load_ca_certificate()
        return cls(org, overlay_prefix, paths.ca_keystore().load_ed25519(), ca_cert)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def issuer(self, now: datetime.datetime) -> Issuer:
        """An Issuer for Store.enrol / Store.issue_certificate (runs inside the transaction)."""

        def issue(system: System) -> IssuedCert:
            cert = issue_system_certificate(
                self.ca_key,
                self.ca_cert,
                Ed25519PublicKey.from_public_bytes(system.public_key),
                name=system.name,
                org=self.org,
                overlay_ip=system.overlay_ip,
                overlay_prefix=self.overlay_prefix,
                tags=system.tags,
                gateway_routes=system.gateway_routes,
                now=now,
                lifetime=datetime.timedelta(seconds=system.cert_lifetime),
            )
            der = cert.public_bytes(serialization.Encoding.DER)
            if len(der) > MAX_CERT_SIZE:  # inside the store's transaction: nothing is written
                raise _too_large(system, len(der))
            return IssuedCert(
                cert.serial_number,
                der,
                int(cert.not_valid_before_utc.timestamp()),
                int(cert.not_valid_after_utc.timestamp()),
            )

        return issue

    def fits(self) -> Callable[[System], None]:
        """certificate_fits for this CA (see there)."""
        return certificate_fits(self.ca_cert, self.org, self.overlay_prefix)

    async def crl(self, store: Store, now: datetime.datetime) -> bytes:
        """The current DER CRL; rebuilt when the store's CRL number changes or every hour."""
        number = await store.crl_number()
        ts = int(now.timestamp())
        cached = self._crl_cache
        if cached is not None and cached[0] == number and ts - cached[1] < 3600:
            return cached[2]
        entries = [
            RevokedEntry(serial, _utc(revoked_at), _REASONS[reason])
            for serial, revoked_at, reason in await store.revoked_certificates(ts)
        ]
        der = build_crl(self.ca_key, self.ca_cert, entries, now=now, number=max(number, 1))
        self._crl_cache = (number, ts, der)
        return der

