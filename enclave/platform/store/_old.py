"""The platform store: SQLite in WAL mode, one transaction per state change.

Every method that changes state runs inside ``with self._tx():`` (BEGIN IMMEDIATE ... COMMIT, or
ROLLBACK on any exception), so a failure half-way leaves no partial rows. Enrolment allocates the
name, overlay IP and key use in the same transaction as the certificate row, which also makes the
N-use limit hold under concurrent enrolments (SQLite serialises writers).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from enclave.cert.names import format_mac, mac_for_name, random_system_name
from enclave.platform.errors import ApiError, StoreError
from enclave.platform.schema import MIGRATIONS

SYSTEM_STATES = ("pending", "active", "disabled", "revoked")
NONCE_RETENTION = 3600  # seconds; longer than the accepted request clock skew
_NAME_ATTEMPTS = 64


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


@dataclass(frozen=True)
class IssuedCert:
    serial: int
    der: bytes
    not_before: int
    not_after: int


# Called inside the enrolment/renewal transaction with the system row: returns the certificate.
Issuer = Callable[[System], IssuedCert]


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(
                str(path), isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            raise StoreError(f"cannot open platform database {path}: {exc}") from None

    @classmethod
    def open_existing(cls, path: Path) -> Store:
        if not path.exists():
            raise StoreError(f"no platform database at {path} (run `enclave platform init`)")
        return cls(path)

    def close(self) -> None:
        self._db.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this enclave "
                f"({len(MIGRATIONS)}); upgrade enclave"
            )
        for index in range(version, len(MIGRATIONS)):
            with self._tx():
                for statement in _split_sql(MIGRATIONS[index]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {index + 1}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def integrity_check(self) -> None:
        try:
            result = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"platform database {self.path} is corrupt: {exc}") from None
        if result != "ok":
            raise StoreError(f"platform database {self.path} is corrupt: {result}")

    # -- meta -------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def require_meta(self, key: str) -> str:
        value = self.get_meta(key)
        if value is None:
            raise StoreError(f"platform database {self.path} is missing setting {key!r}")
        return value

    def set_meta(self, values: dict[str, str]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def check_admin_token(self, token: str) -> bool:
        stored = self.get_meta("admin_token_hash")
        if stored is None:
            return False
        return hmac.compare_digest(bytes.fromhex(stored), secret_hash(token.encode()))

    # -- enrolment keys ---------------------------------------------------------------------

    def create_key(
        self,
        *,
        secret: bytes,
        now: int,
        expires_at: int | None,
        uses_allowed: int | None,
        tags: tuple[str, ...],
        approval: str,
        ephemeral: bool,
        cert_lifetime: int,
    ) -> EnrolmentKey:
        key_id = secrets.token_hex(6)
        with self._tx() as db:
            db.execute(
                "INSERT INTO enrolment_keys (id, secret_hash, created_at, expires_at, "
                "uses_allowed, tags, approval, ephemeral, cert_lifetime) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    secret_hash(secret),
                    now,
                    expires_at,
                    uses_allowed,
                    json.dumps(list(tags)),
                    approval,
                    int(ephemeral),
                    cert_lifetime,
                ),
            )
        key = self.get_key(key_id)
        assert key is not None
        return key

    def get_key(self, key_id: str) -> EnrolmentKey | None:
        row = self._db.execute("SELECT * FROM enrolment_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _key(row)

    def list_keys(self) -> list[EnrolmentKey]:
        rows = self._db.execute("SELECT * FROM enrolment_keys ORDER BY created_at, id")
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str, now: int) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE enrolment_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            if cur.rowcount != 1:
                raise ApiError(404, f"no active enrolment key {key_id!r}")

    # -- enrolment --------------------------------------------------------------------------

    def enrol(
        self,
        *,
        key_id: str,
        secret: bytes,
        public_key: bytes,
        hostname: str,
        overlay: ipaddress.IPv4Network,
        now: int,
        issue: Issuer,
    ) -> tuple[System, IssuedCert | None]:
        """Check the key, allocate name + IP, insert the system (+ certificate if auto-approved)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM enrolment_keys WHERE id = ?", (key_id,)).fetchone()
            stored = b"" if row is None else bytes(row["secret_hash"])
            if row is None or not hmac.compare_digest(stored, secret_hash(secret)):
                raise ApiError(401, "invalid enrolment token")
            key = _key(row)
            if key.revoked_at is not None:
                raise ApiError(403, "enrolment key has been revoked")
            if key.expires_at is not None and now >= key.expires_at:
                raise ApiError(403, "enrolment key has expired")
            if key.uses_allowed is not None and key.uses >= key.uses_allowed:
                raise ApiError(403, "enrolment key has been used up")
            if db.execute("SELECT 1 FROM systems WHERE public_key = ?", (public_key,)).fetchone():
                raise ApiError(409, "this public key is already enrolled")
            name = self._allocate_name(db)
            overlay_ip = self._allocate_ip(db, overlay)
            state = "active" if key.approval == "auto" else "pending"
            db.execute(
                "INSERT INTO systems (name, hostname, public_key, overlay_ip, mac, tags, state, "
                "key_id, ephemeral, cert_lifetime, enrolled_at, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    hostname,
                    public_key,
                    str(overlay_ip),
                    format_mac(mac_for_name(name)),
                    json.dumps(list(key.tags)),
                    state,
                    key.id,
                    int(key.ephemeral),
                    key.cert_lifetime,
                    now,
                    now,
                ),
            )
            db.execute("UPDATE enrolment_keys SET uses = uses + 1 WHERE id = ?", (key.id,))
            system = self._system(db, name)
            cert = self._issue(db, system, issue) if state == "active" else None
            return system, cert

    def _allocate_name(self, db: sqlite3.Connection) -> str:
        for _ in range(_NAME_ATTEMPTS):
            name = random_system_name()
            mac = format_mac(mac_for_name(name))
            clash = db.execute(
                "SELECT 1 FROM systems WHERE name = ? OR mac = ? "
                "UNION SELECT 1 FROM retired_names WHERE name = ?",
                (name, mac, name),
            ).fetchone()
            if clash is None:
                return name
        raise ApiError(503, "could not allocate a unique system name")

    def _allocate_ip(
        self, db: sqlite3.Connection, overlay: ipaddress.IPv4Network
    ) -> ipaddress.IPv4Address:
        usable = overlay.num_addresses - 2  # never the network or broadcast address
        for _ in range(_NAME_ATTEMPTS):
            candidate = overlay.network_address + 1 + secrets.randbelow(usable)
            if not db.execute(
                "SELECT 1 FROM systems WHERE overlay_ip = ?", (str(candidate),)
            ).fetchone():
                return candidate
        used = {r[0] for r in db.execute("SELECT overlay_ip FROM systems")}
        for candidate in overlay.hosts():
            if str(candidate) not in used:
                return candidate
        raise ApiError(503, f"overlay range {overlay} is full")

    def _issue(self, db: sqlite3.Connection, system: System, issue: Issuer) -> IssuedCert:
        cert = issue(system)
        db.execute(
            "INSERT INTO certificates (serial, system_name, der, not_before, not_after) "
            "VALUES (?, ?, ?, ?, ?)",
            (cert.serial, system.name, cert.der, cert.not_before, cert.not_after),
        )
        return cert

    # -- systems ----------------------------------------------------------------------------

    def _system(self, db: sqlite3.Connection, name: str) -> System:
        row = db.execute(
            "SELECT s.*, (SELECT MAX(c.not_after) FROM certificates c WHERE c.system_name = s.name "
            "AND c.revoked_at IS NULL) AS cert_not_after FROM systems s WHERE s.name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise ApiError(404, f"no system named {name!r}")
        return _system(row)

    def get_system(self, name: str) -> System:
        return self._system(self._db, name)

    def list_systems(self) -> list[System]:
        rows = self._db.execute(
            "SELECT s.*, (SELECT MAX(c.not_after) FROM certificates c WHERE c.system_name = s.name "
            "AND c.revoked_at IS NULL) AS cert_not_after FROM systems s "
            "ORDER BY s.enrolled_at, s.name"
        )
        return [_system(r) for r in rows]

    def current_certificate(self, name: str, now: int) -> IssuedCert | None:
        row = self._db.execute(
            "SELECT serial, der, not_before, not_after FROM certificates WHERE system_name = ? "
            "AND revoked_at IS NULL AND not_after > ? ORDER BY not_after DESC LIMIT 1",
            (name, now),
        ).fetchone()
        return None if row is None else IssuedCert(row[0], bytes(row[1]), row[2], row[3])

    def issue_certificate(self, name: str, now: int, issue: Issuer) -> IssuedCert:
        """A new certificate for an active system (after approval, renewal, tag change)."""
        with self._tx() as db:
            system = self._system(db, name)
            if system.state != "active":
                raise ApiError(403, f"system {name} is {system.state}")
            db.execute("UPDATE systems SET last_seen = ? WHERE name = ?", (now, name))
            return self._issue(db, system, issue)

    def touch(self, name: str, now: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE systems SET last_seen = ? WHERE name = ?", (now, name))

    def approve(self, name: str) -> System:
        with self._tx() as db:
            system = self._system(db, name)
            if system.state != "pending":
                raise ApiError(409, f"system {name} is {system.state}, not pending")
            db.execute("UPDATE systems SET state = 'active' WHERE name = ?", (name,))
            return self._system(db, name)

    def disable(self, name: str, now: int) -> System:
        with self._tx() as db:
            system = self._system(db, name)
            if system.state not in ("active", "pending"):
                raise ApiError(409, f"system {name} is {system.state}")
            db.execute("UPDATE systems SET state = 'disabled' WHERE name = ?", (name,))
            db.execute(
                "UPDATE certificates SET revoked_at = ?, revoke_reason = 'hold' "
                "WHERE system_name = ? AND revoked_at IS NULL",
                (now, name),
            )
            self._bump_crl(db)
            return self._system(db, name)

    def enable(self, name: str) -> System:
        with self._tx() as db:
            system = self._system(db, name)
            if system.state != "disabled":
                raise ApiError(409, f"system {name} is {system.state}, not disabled")
            db.execute("UPDATE systems SET state = 'active' WHERE name = ?", (name,))
            db.execute(
                "UPDATE certificates SET revoked_at = NULL, revoke_reason = NULL "
                "WHERE system_name = ? AND revoke_reason = 'hold'",
                (name,),
            )
            self._bump_crl(db)
            return self._system(db, name)

    def revoke(self, name: str, now: int) -> System:
        with self._tx() as db:
            system = self._system(db, name)
            if system.state == "revoked":
                raise ApiError(409, f"system {name} is already revoked")
            db.execute("UPDATE systems SET state = 'revoked' WHERE name = ?", (name,))
            self._revoke_certs(db, name, now)
            return self._system(db, name)

    def remove(self, name: str, now: int) -> list[str]:
        """Revoke and forget a system (`systems remove`, DELETE /v1/admin/systems/NAME); the
        names of the gateway policies that went with it."""
        with self._tx() as db:
            self._system(db, name)
            return self._forget(db, name, now)

    def reap_ephemeral(self, offline_since: int, online: set[str], now: int) -> list[str]:
        """Remove every ephemeral system last seen at or before ``offline_since`` that is not in
        ``online``, exactly as remove() does; one transaction for all."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT name FROM systems WHERE ephemeral = 1 "
                "AND COALESCE(last_seen, enrolled_at) <= ? ORDER BY name",
                (offline_since,),
            ).fetchall()
            names = [str(r["name"]) for r in rows if r["name"] not in online]
            for name in names:
                self._forget(db, name, now)
            return names

    def _forget(self, db: sqlite3.Connection, name: str, now: int) -> list[str]:
        """The one removal path (inside the caller's transaction): certificates revoked (CRL
        bumped), its own intents and every intent naming it deleted, the gateway policies whose
        gateway it is deleted (with the intents they produced; a retired name can never match
        again), the name retired, the row gone; returns those policies' names. The hub's next
        pass withdraws it from its peers (reason "revoked"), closes its session, pushes the CRL
        and each holder's shorter intent list. Plain tag policies are left alone, also those
        with a name:SYSTEM selector for it."""
        self._revoke_certs(db, name, now)
        db.execute("DELETE FROM intents WHERE from_name = ? OR to_name = ?", (name, name))
        policies = [str(r[0]) for r in db.execute(
            "SELECT name FROM policies WHERE gateway = ? ORDER BY name", (name,))]
        db.execute("DELETE FROM intents WHERE policy IN "
                   "(SELECT name FROM policies WHERE gateway = ?)", (name,))
        db.execute("DELETE FROM policies WHERE gateway = ?", (name,))
        db.execute("INSERT OR IGNORE INTO retired_names (name) VALUES (?)", (name,))
        db.execute("DELETE FROM systems WHERE name = ?", (name,))
        return policies

    def _revoke_certs(self, db: sqlite3.Connection, name: str, now: int) -> None:
        db.execute(
            "UPDATE certificates SET revoked_at = COALESCE(revoked_at, ?), "
            "revoke_reason = 'cessation' "
            "WHERE system_name = ? AND (revoked_at IS NULL OR revoke_reason = 'hold')",
            (now, name),
        )
        self._bump_crl(db)

    def set_tags(self, name: str, add: tuple[str, ...], remove: tuple[str, ...],
                 *, fits: Callable[[System], None] | None = None) -> System:
        """Change a system's tags; they appear in its certificate from the next renewal.

        ``fits`` (authority.certificate_fits) sees the system as changed, inside the
        transaction: if it raises, nothing is written."""
        with self._tx() as db:
            system = self._system(db, name)
            tags = (set(system.tags) | set(add)) - set(remove)
            db.execute(
                "UPDATE systems SET tags = ? WHERE name = ?", (json.dumps(sorted(tags)), name)
            )
            changed = self._system(db, name)
            if fits is not None:
                fits(changed)
            return changed

    def set_gateway(self, name: str, routes: tuple[ipaddress.IPv4Network, ...],
                    nat: bool, *, fits: Callable[[System], None] | None = None) -> System:
        """Let a system serve ``routes`` (empty: no longer a gateway); in its next certificate.

        Gateway policies naming it stay either way, as a policy may also be made before its
        gateway serves routes: offers and grants are clipped to the routes it serves (none
        after clearing; they return when it serves routes again), while the policy, also a tag
        policy towards name:GATEWAY, still introduces the pairs. Removing the policy ends that;
        removing the system deletes its gateway policies (``_forget``). ``fits`` as for
        set_tags."""
        with self._tx() as db:
            self._system(db, name)
            db.execute(
                "UPDATE systems SET gateway_routes = ?, gateway_nat = ? WHERE name = ?",
                (json.dumps([str(r) for r in routes]), int(nat), name),
            )
            changed = self._system(db, name)
            if fits is not None:
                fits(changed)
            return changed

    # -- revocation list --------------------------------------------------------------------

    def _bump_crl(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('crl_number', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    def crl_number(self) -> int:
        return int(self.get_meta("crl_number") or "0")

    def revoked_certificates(self, now: int) -> list[tuple[int, int, str]]:
        """(serial, revoked_at, reason) of revoked or held certificates not yet expired."""
        rows = self._db.execute(
            "SELECT serial, revoked_at, revoke_reason FROM certificates "
            "WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial",
            (now,),
        )
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    # -- replay protection ------------------------------------------------------------------

    def use_nonce(self, nonce: str, now: int) -> bool:
        """Record a request nonce; False if it was seen before (a replay)."""
        with self._tx() as db:
            db.execute("DELETE FROM used_nonces WHERE seen_at < ?", (now - NONCE_RETENTION,))
            cur = db.execute(
                "INSERT OR IGNORE INTO used_nonces (nonce, seen_at) VALUES (?, ?)", (nonce, now)
            )
            return cur.rowcount == 1

    # -- intents and tag policies (see enclave.policy) --------------------------------------

    def put_intent(
        self, from_name: str, to_name: str, statement: bytes, signature: bytes,
        issued_at: int, expires_at: int | None, policy: str | None,
    ) -> None:
        """Store (or replace) FROM's signed intent for TO."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO intents (from_name, to_name, statement, signature, issued_at, "
                "expires_at, policy) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (from_name, to_name) DO UPDATE SET statement = excluded.statement, "
                "signature = excluded.signature, issued_at = excluded.issued_at, "
                "expires_at = excluded.expires_at, policy = excluded.policy",
                (from_name, to_name, statement, signature, issued_at, expires_at, policy),
            )

    def delete_intent(self, from_name: str, to_name: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM intents WHERE from_name = ? AND to_name = ?", (from_name, to_name)
            )
            return cur.rowcount == 1

    def list_intents(self, from_name: str | None = None) -> list[sqlite3.Row]:
        """Rows (from_name, to_name, issued_at, expires_at, policy), all or one holder's."""
        sql = "SELECT from_name, to_name, issued_at, expires_at, policy FROM intents"
        if from_name is None:
            return list(self._db.execute(sql + " ORDER BY from_name, to_name"))
        return list(self._db.execute(sql + " WHERE from_name = ? ORDER BY to_name", (from_name,)))

    def add_policy(self, name: str, from_sel: str, to_sel: str, now: int, *,
                   gateway: str | None = None, routes: tuple[str, ...] = (),
                   acl: tuple[str, ...] = ("any",)) -> None:
        """A tag policy; with ``gateway`` a gateway access policy (to_sel is name:GATEWAY), whose
        gateway must be an enrolled system (404 otherwise, checked in the same transaction)."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM policies WHERE name = ?", (name,)).fetchone():
                raise ApiError(409, f"policy {name!r} exists")
            if gateway is not None:
                self._system(db, gateway)
            db.execute(
                "INSERT INTO policies (name, from_sel, to_sel, created_at, gateway, routes, acl) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, from_sel, to_sel, now, gateway, json.dumps(list(routes)),
                 json.dumps(list(acl))),
            )

    def list_gateway_policies(self) -> list[tuple[str, str, str, list[str], list[str]]]:
        """(name, from_sel, gateway, routes, acl) of the gateway access policies."""
        rows = self._db.execute(
            "SELECT name, from_sel, gateway, routes, acl FROM policies "
            "WHERE gateway IS NOT NULL ORDER BY name"
        )
        return [(str(r[0]), str(r[1]), str(r[2]), list(json.loads(r[3])), list(json.loads(r[4])))
                for r in rows]

    def remove_policy(self, name: str, *, gateway_only: bool = False) -> None:
        """Drop a policy and the counter-signed intents it produced (``gateway_only``: only if
        it is a gateway access policy, else 404)."""
        with self._tx() as db:
            sql = "DELETE FROM policies WHERE name = ?"
            if gateway_only:
                sql += " AND gateway IS NOT NULL"
            if db.execute(sql, (name,)).rowcount != 1:
                raise ApiError(404, f"no {'gateway ' if gateway_only else ''}policy {name!r}")
            db.execute("DELETE FROM intents WHERE policy = ?", (name,))

    def list_policies(self) -> list[tuple[str, str, str, int]]:
        rows = self._db.execute(
            "SELECT name, from_sel, to_sel, created_at FROM policies ORDER BY name"
        )
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def data_version(self) -> int:
        """Changes when another connection (e.g. an admin CLI process) commits."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])


def _split_sql(script: str) -> list[str]:
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return [s for s in statements if s]


def _key(row: sqlite3.Row) -> EnrolmentKey:
    return EnrolmentKey(
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


def _system(row: sqlite3.Row) -> System:
    return System(
        name=row["name"],
        hostname=row["hostname"],
        public_key=bytes(row["public_key"]),
        overlay_ip=ipaddress.IPv4Address(row["overlay_ip"]),
        mac=row["mac"],
        tags=tuple(json.loads(row["tags"])),
        gateway_routes=tuple(ipaddress.IPv4Network(r) for r in json.loads(row["gateway_routes"])),
        state=row["state"],
        key_id=row["key_id"],
        ephemeral=bool(row["ephemeral"]),
        cert_lifetime=row["cert_lifetime"],
        enrolled_at=row["enrolled_at"],
        last_seen=row["last_seen"],
        cert_not_after=row["cert_not_after"],
        gateway_nat=bool(row["gateway_nat"]),
    )
