"""What the platform store hands out: enrolment keys, systems, certificates, intent rows, and a
read-only snapshot of what the control hub decides from. Plain frozen dataclasses, no I/O."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enclave.platform.errors import ApiError

SYSTEM_STATES = ("pending", "active", "disabled", "revoked")
NONCE_RETENTION = 3600  # seconds; longer than the accepted request clock skew

Row = dict[str, Any]  # one result row, column name -> SQL value (int, str, bytes or None)


def secret_hash(secret: bytes) -> bytes:
    """SHA-256 of a high-entropy secret (enrolment secrets and admin tokens)."""
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True)
class EnrolmentKey:
    id: str
    created_at: int
    expires_at: int | None
    uses_allowed: int | None
    uses: int
    tags: tuple[str, ...]
    approval: str
    ephemeral: bool
    cert_lifetime: int
    revoked_at: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "uses_allowed": self.uses_allowed,
            "uses": self.uses,
            "tags": list(self.tags),
            "approval": self.approval,
            "ephemeral": self.ephemeral,
            "cert_lifetime": self.cert_lifetime,
            "revoked": self.revoked_at is not None,
        }

    @classmethod
    def from_row(cls, row: Row) -> EnrolmentKey:
        return cls(
            id=row["id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            uses_allowed=row["uses_allowed"],
            uses=row["uses"],
            tags=tuple(json.loads(row["tags"])),
            approval=row["approval"],
            ephemeral=bool(row["ephemeral"]),
            cert_lifetime=row["cert_lifetime"],
            revoked_at=row["revoked_at"],
        )


@dataclass(frozen=True)
class System:
    name: str
    hostname: str
    public_key: bytes
    overlay_ip: ipaddress.IPv4Address
    mac: str
    tags: tuple[str, ...]
    gateway_routes: tuple[ipaddress.IPv4Network, ...]
    state: str
    key_id: str
    ephemeral: bool
    cert_lifetime: int
    enrolled_at: int
    last_seen: int | None
    cert_not_after: int | None = None
    gateway_nat: bool = True  # masquerade overlay sources (False: routed mode)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "hostname": self.hostname,
            "tags": list(self.tags),
            "overlay_ip": str(self.overlay_ip),
            "mac": self.mac,
            "state": self.state,
            "certificate_expires": self.cert_not_after,
            "last_seen": self.last_seen,
            "enrolled_at": self.enrolled_at,
            "ephemeral": self.ephemeral,
            "enrolment_key": self.key_id,
            "gateway_routes": [str(r) for r in self.gateway_routes],
            "gateway_nat": self.gateway_nat,
        }

    @classmethod
    def from_row(cls, row: Row) -> System:
        return cls(
            name=row["name"],
            hostname=row["hostname"],
            public_key=bytes(row["public_key"]),
            overlay_ip=ipaddress.IPv4Address(row["overlay_ip"]),
            mac=row["mac"],
            tags=tuple(json.loads(row["tags"])),
            gateway_routes=tuple(ipaddress.IPv4Network(r)
                                 for r in json.loads(row["gateway_routes"])),
            state=row["state"],
            key_id=row["key_id"],
            ephemeral=bool(row["ephemeral"]),
            cert_lifetime=row["cert_lifetime"],
            enrolled_at=row["enrolled_at"],
            last_seen=row["last_seen"],
            cert_not_after=row["cert_not_after"],
            gateway_nat=bool(row["gateway_nat"]),
        )


@dataclass(frozen=True)
class IssuedCert:
    serial: int
    der: bytes
    not_before: int
    not_after: int


@dataclass(frozen=True)
class IntentRecord:
    """One stored intent (FROM wants TO); ``policy`` names the tag policy it counter-signs."""
    from_name: str
    to_name: str
    issued_at: int
    expires_at: int | None
    policy: str | None

    @classmethod
    def from_row(cls, row: Row) -> IntentRecord:
        return cls(row["from_name"], row["to_name"], row["issued_at"], row["expires_at"],
                   row["policy"])


@dataclass(frozen=True)
class Policy:
    """A tag policy; with ``gateway`` a gateway access policy (routes and acl apply)."""
    name: str
    from_sel: str
    to_sel: str
    created_at: int
    gateway: str | None = None
    routes: tuple[str, ...] = ()
    acl: tuple[str, ...] = ("any",)

    @classmethod
    def from_row(cls, row: Row) -> Policy:
        return cls(row["name"], row["from_sel"], row["to_sel"], row["created_at"],
                   row["gateway"], tuple(json.loads(row["routes"])),
                   tuple(json.loads(row["acl"])))


GatewayPolicyRow = tuple[str, str, str, list[str], list[str]]  # name, from, gateway, routes, acl


@dataclass(frozen=True)
class Snapshot:
    """Everything the control hub decides from, read in one consistent read at ``now``."""
    now: int
    systems: dict[str, System]
    revoked_serials: frozenset[int]
    crl_number: int
    intents: tuple[IntentRecord, ...]
    policies: tuple[Policy, ...]
    certificates: dict[str, IssuedCert] = field(default_factory=dict)  # current, per system

    def get_system(self, name: str) -> System:
        system = self.systems.get(name)
        if system is None:
            raise ApiError(404, f"no system named {name!r}")
        return system

    def current_certificate(self, name: str, now: int) -> IssuedCert | None:
        """The newest unrevoked certificate valid at the snapshot's time (``now`` is ignored:
        the snapshot was taken at one instant)."""
        return self.certificates.get(name)

    def list_gateway_policies(self) -> list[GatewayPolicyRow]:
        return [(p.name, p.from_sel, p.gateway, list(p.routes), list(p.acl))
                for p in self.policies if p.gateway is not None]


# Called inside the enrolment/renewal transaction with the system row: returns the certificate.
Issuer = Callable[[System], IssuedCert]
