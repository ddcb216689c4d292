"""How a system's identity is carried in its X.509 certificate (the one home for this encoding).

A system certificate (X.509 v3, signed by the org CA with Ed25519):

    subject            CN=<name>, O=<org>                     e.g. CN=V88RY, O=acme
    subjectPublicKey   Ed25519, the system's own key (generated on the host)
    basicConstraints   critical, CA:FALSE
    keyUsage           critical, digitalSignature
    extendedKeyUsage   serverAuth, clientAuth
    subjectAltName     (every entry below is readable with `openssl x509 -text`)
        URI:enclave://<org>/<name>            identity; must agree with the subject
        IP Address:<overlay IPv4>             the system's overlay address
        URI:enclave:prefix:<n>                prefix length of the org overlay range (e.g. 10)
        URI:enclave:mac:<aa:bb:cc:dd:ee:ff>   virtual MAC; must equal names.mac_for_name(name)
        URI:enclave:tag:<tag>                 one entry per tag (zero or more)
        URI:enclave:gateway:<a.b.c.d/n>       one per route the system may act as gateway for

Unknown ``enclave:`` URIs are rejected, so a future field needs a new version of this module.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509

from enclave.cert.errors import CertificateError
from enclave.cert.names import format_mac, parse_mac

IDENTITY_URI_PREFIX = "enclave://"
PREFIX_URI = "enclave:prefix:"
MAC_URI = "enclave:mac:"
TAG_URI = "enclave:tag:"
GATEWAY_URI = "enclave:gateway:"


def identity_uri(org: str, name: str) -> str:
    return f"{IDENTITY_URI_PREFIX}{org}/{name}"


def build_san(
    *,
    org: str,
    name: str,
    overlay_ip: ipaddress.IPv4Address,
    overlay_prefix: int,
    mac: bytes,
    tags: tuple[str, ...],
    gateway_routes: tuple[ipaddress.IPv4Network, ...],
) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(org, name)),
        x509.IPAddress(overlay_ip),
        x509.UniformResourceIdentifier(f"{PREFIX_URI}{overlay_prefix}"),
        x509.UniformResourceIdentifier(f"{MAC_URI}{format_mac(mac)}"),
    ]
    entries += [x509.UniformResourceIdentifier(f"{TAG_URI}{t}") for t in tags]
    entries += [x509.UniformResourceIdentifier(f"{GATEWAY_URI}{r}") for r in gateway_routes]
    return x509.SubjectAlternativeName(entries)


class ParsedSan:
    """The fields read back from a system certificate's subjectAltName."""

    __slots__ = ("gateway_routes", "mac", "name", "org", "overlay_ip", "overlay_prefix", "tags")

    def __init__(self) -> None:
        self.org: str | None = None
        self.name: str | None = None
        self.overlay_ip: ipaddress.IPv4Address | None = None
        self.overlay_prefix: int | None = None
        self.mac: bytes | None = None
        self.tags: list[str] = []
        self.gateway_routes: list[ipaddress.IPv4Network] = []


def parse_san(san: x509.SubjectAlternativeName) -> ParsedSan:
    """Read the enclave fields; raise CertificateError on anything unexpected or duplicated."""
    out = ParsedSan()
    for entry in san:
        if isinstance(entry, x509.IPAddress):
            if out.overlay_ip is not None or not isinstance(entry.value, ipaddress.IPv4Address):
                raise CertificateError("certificate must carry exactly one IPv4 overlay address")
            out.overlay_ip = entry.value
        elif isinstance(entry, x509.UniformResourceIdentifier):
            _parse_uri(entry.value, out)
        else:
            raise CertificateError(f"unexpected subjectAltName entry {entry!r}")
    if out.org is None or out.name is None:
        raise CertificateError("certificate has no enclave:// identity URI")
    if out.overlay_ip is None:
        raise CertificateError("certificate has no overlay IP address")
    if out.overlay_prefix is None:
        raise CertificateError("certificate has no overlay prefix")
    if out.mac is None:
        raise CertificateError("certificate has no virtual MAC")
    return out


def _parse_uri(value: str, out: ParsedSan) -> None:
    try:
        if value.startswith(IDENTITY_URI_PREFIX):
            if out.org is not None:
                raise CertificateError("duplicate identity URI")
            org, sep, name = value[len(IDENTITY_URI_PREFIX) :].partition("/")
            if not sep or not org or not name or "/" in name:
                raise CertificateError(f"malformed identity URI {value!r}")
            out.org, out.name = org, name
        elif value.startswith(PREFIX_URI):
            if out.overlay_prefix is not None:
                raise CertificateError("duplicate overlay prefix")
            prefix = int(value[len(PREFIX_URI) :])
            if not 1 <= prefix <= 30:
                raise CertificateError(f"overlay prefix {prefix} out of range")
            out.overlay_prefix = prefix
        elif value.startswith(MAC_URI):
            if out.mac is not None:
                raise CertificateError("duplicate MAC")
            out.mac = parse_mac(value[len(MAC_URI) :])
        elif value.startswith(TAG_URI):
            out.tags.append(value[len(TAG_URI) :])
        elif value.startswith(GATEWAY_URI):
            out.gateway_routes.append(ipaddress.IPv4Network(value[len(GATEWAY_URI) :]))
        else:
            raise CertificateError(f"unknown subjectAltName URI {value!r}")
    except ValueError as exc:
        raise CertificateError(f"malformed subjectAltName URI {value!r}: {exc}") from None
