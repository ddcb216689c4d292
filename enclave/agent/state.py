"""The agent state directory (0700; every file written atomically, private files 0600).

    STATE/ (default /var/lib/enclave, or $ENCLAVE_STATE, or --state)
      key.pem          system private key, encrypted PKCS#8 (generated here, never sent)
      key.kek          key-encryption key (0600), unless ENCLAVE_KEY_PASSPHRASE or the systemd
                       credential enclave-key-passphrase supplies it
      enrolment.json   platform URL + pinned TLS key, system name, org, overlay IP, state
      system.crt       current system certificate (PEM)
      ca.crt           org CA certificate (PEM), fetched over the pinned connection
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from enclave.agent.errors import AgentError
from enclave.cert.errors import CertificateError
from enclave.cert.files import PRIVATE_FILE_MODE, atomic_write, ensure_private_dir
from enclave.cert.identity import SystemIdentity
from enclave.cert.keystore import KeyStore
from enclave.cert.verification import verify_system_certificate

STATE_ENV = "ENCLAVE_STATE"
DEFAULT_STATE_DIR = "/var/lib/enclave"
MAX_STATE_FILE_BYTES = 64 * 1024


def resolve_state_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class EnrolmentRecord:
    url: str
    pin: str
    name: str
    org: str
    overlay_ip: str
    overlay_prefix: int
    mac: str
    state: str  # "pending" or "active"
    hostname: str
    urls: tuple[str, ...] = ()  # every node's URL (token, then the control channel); url first

    @property
    def all_urls(self) -> tuple[str, ...]:
        """The platform's URLs to try, ``url`` first (records from before the list: it alone)."""
        return (self.url, *(u for u in self.urls if u != self.url))


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def key_path(self) -> Path:
        return self.root / "key.pem"

    @property
    def kek_path(self) -> Path:
        return self.root / "key.kek"

    @property
    def enrolment_path(self) -> Path:
        return self.root / "enrolment.json"

    @property
    def cert_path(self) -> Path:
        return self.root / "system.crt"

    @property
    def ca_path(self) -> Path:
        return self.root / "ca.crt"

    def keystore(self) -> KeyStore:
        return KeyStore(self.key_path, self.kek_path)

    def ensure(self) -> None:
        ensure_private_dir(self.root)

    def _read(self, path: Path, what: str) -> bytes:
        try:
            if path.stat().st_size > MAX_STATE_FILE_BYTES:
                raise AgentError(f"{what} file {path} is too large (corrupt?)")
            return path.read_bytes()
        except FileNotFoundError:
            raise AgentError(f"{what} file {path} not found (not enrolled?)") from None
        except OSError as exc:
            raise AgentError(f"cannot read {what} file {path}: {exc}") from None

    # -- enrolment record -----------------------------------------------------------------------

    def has_enrolment(self) -> bool:
        return self.enrolment_path.exists()

    def load_enrolment(self) -> EnrolmentRecord:
        raw = self._read(self.enrolment_path, "enrolment")
        try:
            data = json.loads(raw)
            urls = data.pop("urls", []) if isinstance(data, dict) else []
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise TypeError("wrong field types")
            record = EnrolmentRecord(**data, urls=tuple(urls))
            if not all(isinstance(getattr(record, f), str) for f in
                       ("url", "pin", "name", "org", "overlay_ip", "mac", "state", "hostname")):
                raise TypeError("wrong field types")
            if not isinstance(record.overlay_prefix, int):
                raise TypeError("wrong field types")
        except (ValueError, TypeError) as exc:
            raise AgentError(f"enrolment file {self.enrolment_path} is corrupt: {exc}") from None
        return record

    def save_enrolment(self, record: EnrolmentRecord) -> None:
        data = json.dumps(asdict(record), indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(self.enrolment_path, data, PRIVATE_FILE_MODE)

    # -- certificates ---------------------------------------------------------------------------

    def load_ca(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self._read(self.ca_path, "CA certificate"))
        except ValueError as exc:
            raise AgentError(f"CA certificate {self.ca_path} is corrupt: {exc}") from None

    def load_certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self._read(self.cert_path, "certificate"))
        except ValueError as exc:
            raise AgentError(f"certificate {self.cert_path} is corrupt: {exc}") from None

    def save_certificates(self, cert_pem: bytes, ca_pem: bytes) -> None:
        atomic_write(self.ca_path, ca_pem, PRIVATE_FILE_MODE)
        atomic_write(self.cert_path, cert_pem, PRIVATE_FILE_MODE)

    def identity(self, now: datetime.datetime) -> SystemIdentity:
        """The verified identity of this system at ``now``; an expired certificate raises."""
        cert = self.load_certificate()
        der = cert.public_bytes(serialization.Encoding.DER)
        try:
            return verify_system_certificate(der, self.load_ca(), now=now)
        except CertificateError as exc:
            raise AgentError(f"own certificate unusable: {exc}") from None


def overlay_interface(record: EnrolmentRecord) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{record.overlay_ip}/{record.overlay_prefix}")
