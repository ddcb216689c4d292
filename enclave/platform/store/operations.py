"""The platform store: every operation on the platform's state, written once for both backends.

Every method that changes state runs inside one ``async with self.db.write() as tx:`` (all or
nothing), so a failure half-way leaves no partial rows. Enrolment allocates the name, overlay IP
and key use in the same transaction as the certificate row, which also makes the N-use limit
hold under concurrent enrolments (writers are serialised; see base.py).

Last-seen times are not written on every connect: note_seen() keeps them in memory and
flush_seen() writes the newest of each in one transaction (the control hub calls it
periodically and before it reaps ephemeral systems), so authenticating an agent writes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from enclave.cert.names import format_mac, mac_for_name, random_system_name
from enclave.platform.errors import ApiError, StoreError
from enclave.platform.store.base import Database, Tx
from enclave.platform.store.migrations import migrate
from enclave.platform.store.postgres import PostgresDatabase
from enclave.platform.store.records import (
    NONCE_RETENTION,
    EnrolmentKey,
    GatewayPolicyRow,
    IntentRecord,
    IssuedCert,
    Issuer,
    Policy,
    Row,
    Snapshot,
    System,
    secret_hash,
)
from enclave.platform.store.sqlite import SqliteDatabase

_NAME_ATTEMPTS = 64
_DER_CHUNK = 500  # serials per certificate fetch in snapshot()
_SYSTEM_SQL = ("SELECT s.*, (SELECT MAX(c.not_after) FROM certificates c "
               "WHERE c.system_name = s.name AND c.revoked_at IS NULL) AS cert_not_after "
               "FROM systems s")
# a system and its current certificate (as _current_certificate), in one statement
_AUTH_SQL = ("SELECT s.*, (SELECT MAX(c.not_after) FROM certificates c "
             "WHERE c.system_name = s.name AND c.revoked_at IS NULL) AS cert_not_after, "
             "cur.serial AS cur_serial, cur.der AS cur_der, cur.not_before AS cur_not_before, "
             "cur.not_after AS cur_not_after FROM systems s LEFT JOIN certificates cur "
             "ON cur.serial = (SELECT c.serial FROM certificates c WHERE c.system_name = s.name "
             "AND c.revoked_at IS NULL AND c.not_after > ? ORDER BY c.not_after DESC LIMIT 1) "
             "WHERE s.name = ?")
# the hub's generation: bumped by every change a hub cannot learn of otherwise (admin commands,
# renewals, URL changes), in the change's own transaction; intents and presence do not bump it
# (the hub hears of those by name: Hub.changed, the fan-out's NOTIFY)
_BUMP_GENERATION = (
    "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT (key) "
    "DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)")
_BUMP_CRL = ("INSERT INTO meta (key, value) VALUES ('crl_number', '1') ON CONFLICT (key) "
             "DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)")


def is_database_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


async def open_database(location: str | Path) -> Database:
    """A PostgreSQL URL, else a SQLite file path."""
    if isinstance(location, str) and is_database_url(location):
        return await PostgresDatabase.open(location)
    return SqliteDatabase(Path(location))


class Store:
    """The platform's state on a Database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.location = db.location
        self._seen: dict[str, int] = {}  # last-seen times not yet written
        self._der: dict[int, bytes] = {}  # certificate DER by serial, for snapshot()
        # systems as parsed from their row, for snapshot(): a full pass re-reads every system
        # but parses again (addresses, JSON) only the rows that changed
        self._parsed: dict[str, tuple[tuple[object, ...], System]] = {}

    @classmethod
    async def open(cls, location: str | Path, now: int | None = None) -> Store:
        """Open (PostgreSQL: connect; SQLite: the file, created if missing) and migrate."""
        db = await open_database(location)
        try:
            await migrate(db, int(time.time()) if now is None else now)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def integrity_check(self) -> None:
        await self.db.integrity_check()

    async def data_version(self) -> int:
        """Changes when any connection (e.g. an admin CLI process) commits."""
        return await self.db.data_version()

    async def generation(self) -> int:
        """Changes with every admin change, renewal or URL change, from any process (not with
        intents, enrolments, nonces, presence or last-seen times): what the control hub
        re-reads the whole store for."""
        return int(await self.get_meta("generation") or "0")

    # -- meta -------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self.db.read() as tx:
            row = await tx.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def require_meta(self, key: str) -> str:
        value = await self.get_meta(key)
        if value is None:
            raise StoreError(f"platform database {self.location} is missing setting {key!r}")
        return value

    async def set_meta(self, values: dict[str, str]) -> None:
        async with self.db.write() as tx:
            await tx.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )
            await tx.execute(_BUMP_GENERATION)

    async def check_admin_token(self, token: str) -> bool:
        stored = await self.get_meta("admin_token_hash")
        if stored is None:
            return False
        return hmac.compare_digest(bytes.fromhex(stored), secret_hash(token.encode()))

    # -- enrolment keys ---------------------------------------------------------------------

    async def create_key(self, *, secret: bytes, now: int, expires_at: int | None,
                         uses_allowed: int | None, tags: tuple[str, ...], approval: str,
                         ephemeral: bool, cert_lifetime: int) -> EnrolmentKey:
        key_id = secrets.token_hex(6)
        async with self.db.write() as tx:
            await tx.execute(
                "INSERT INTO enrolment_keys (id, secret_hash, created_at, expires_at, "
                "uses_allowed, tags, approval, ephemeral, cert_lifetime) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, secret_hash(secret), now, expires_at, uses_allowed,
                 json.dumps(list(tags)), approval, int(ephemeral), cert_lifetime),
            )
            row = await tx.fetchone("SELECT * FROM enrolment_keys WHERE id = ?", (key_id,))
        assert row is not None
        return EnrolmentKey.from_row(row)

    async def get_key(self, key_id: str) -> EnrolmentKey | None:
        async with self.db.read() as tx:
            row = await tx.fetchone("SELECT * FROM enrolment_keys WHERE id = ?", (key_id,))
        return None if row is None else EnrolmentKey.from_row(row)

    async def list_keys(self) -> list[EnrolmentKey]:
        async with self.db.read() as tx:
            rows = await tx.fetchall("SELECT * FROM enrolment_keys ORDER BY created_at, id")
        return [EnrolmentKey.from_row(r) for r in rows]

    async def revoke_key(self, key_id: str, now: int) -> None:
        async with self.db.write(serialized=False) as tx:
            changed = await tx.execute(
                "UPDATE enrolment_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            if changed != 1:
                raise ApiError(404, f"no active enrolment key {key_id!r}")

    # -- enrolment --------------------------------------------------------------------------

    async def enrol(self, *, key_id: str, secret: bytes, public_key: bytes, hostname: str,
                    overlay: ipaddress.IPv4Network, now: int, issue: Issuer
                    ) -> tuple[System, IssuedCert | None]:
        """Check the key, allocate name + IP, insert the system (+ certificate if auto-approved)."""
        async with self.db.write() as tx:
            row = await tx.fetchone("SELECT * FROM enrolment_keys WHERE id = ?", (key_id,))
            stored = b"" if row is None else bytes(row["secret_hash"])
            if row is None or not hmac.compare_digest(stored, secret_hash(secret)):
                raise ApiError(401, "invalid enrolment token")
            key = EnrolmentKey.from_row(row)
            if key.revoked_at is not None:
                raise ApiError(403, "enrolment key has been revoked")
            if key.expires_at is not None and now >= key.expires_at:
                raise ApiError(403, "enrolment key has expired")
            if key.uses_allowed is not None and key.uses >= key.uses_allowed:
                raise ApiError(403, "enrolment key has been used up")
            if await tx.fetchone("SELECT 1 AS x FROM systems WHERE public_key = ?",
                                 (public_key,)):
                raise ApiError(409, "this public key is already enrolled")
            name = await _allocate_name(tx)
            overlay_ip = await _allocate_ip(tx, overlay)
            state = "active" if key.approval == "auto" else "pending"
            await tx.execute(
                "INSERT INTO systems (name, hostname, public_key, overlay_ip, mac, tags, state, "
                "key_id, ephemeral, cert_lifetime, enrolled_at, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, hostname, public_key, str(overlay_ip), format_mac(mac_for_name(name)),
                 json.dumps(list(key.tags)), state, key.id, int(key.ephemeral),
                 key.cert_lifetime, now, now),
            )
            await tx.execute("UPDATE enrolment_keys SET uses = uses + 1 WHERE id = ?", (key.id,))
            system = await _system(tx, name)
            cert = await _issue(tx, system, issue) if state == "active" else None
            return system, cert

    # -- systems ----------------------------------------------------------------------------

    async def get_system(self, name: str) -> System:
        row = await self.db.fetch_one(_SYSTEM_SQL + " WHERE s.name = ?", (name,))
        if row is None:
            raise ApiError(404, f"no system named {name!r}")
        return System.from_row(row)

    async def list_systems(self) -> list[System]:
        async with self.db.read() as tx:
            rows = await tx.fetchall(_SYSTEM_SQL + " ORDER BY s.enrolled_at, s.name")
        return [System.from_row(r) for r in rows]

    async def current_certificate(self, name: str, now: int) -> IssuedCert | None:
        async with self.db.read() as tx:
            return await _current_certificate(tx, name, now)

    async def system_and_certificate(self, name: str, now: int
                                     ) -> tuple[System | None, IssuedCert | None]:
        """The system (None: no such system) and its current certificate, in one statement
        (what a control channel's authentication needs; one round trip per connect)."""
        row = await self.db.fetch_one(_AUTH_SQL, (now, name))
        if row is None:
            return None, None
        cert = None if row["cur_serial"] is None else IssuedCert(
            int(row["cur_serial"]), bytes(row["cur_der"]), int(row["cur_not_before"]),
            int(row["cur_not_after"]))
        return System.from_row(row), cert

    async def issue_certificate(self, name: str, now: int, issue: Issuer) -> IssuedCert:
        """A new certificate for an active system (after approval, renewal, tag change)."""
        async with self.db.write() as tx:
            system = await _system(tx, name)
            if system.state != "active":
                raise ApiError(403, f"system {name} is {system.state}")
            await tx.execute("UPDATE systems SET last_seen = ? WHERE name = ?", (now, name))
            await tx.execute(_BUMP_GENERATION)
            return await _issue(tx, system, issue)

    def note_seen(self, name: str, now: int) -> None:
        """Remember that ``name`` was seen at ``now`` (written by the next flush_seen)."""
        if now > self._seen.get(name, 0):
            self._seen[name] = now

    async def flush_seen(self) -> int:
        """Write the noted last-seen times (never moving one back); how many."""
        if not self._seen:
            return 0
        pending, self._seen = self._seen, {}
        try:
            async with self.db.write(serialized=False) as tx:
                await tx.executemany(
                    "UPDATE systems SET last_seen = ? WHERE name = ? "
                    "AND (last_seen IS NULL OR last_seen < ?)",
                    [(at, name, at) for name, at in sorted(pending.items())])
        except BaseException:
            for name, at in pending.items():  # kept for the next flush
                self.note_seen(name, at)
            raise
        return len(pending)

    async def approve(self, name: str) -> System:
        async with self.db.write() as tx:
            system = await _system(tx, name)
            if system.state != "pending":
                raise ApiError(409, f"system {name} is {system.state}, not pending")
            await tx.execute("UPDATE systems SET state = 'active' WHERE name = ?", (name,))
            await tx.execute(_BUMP_GENERATION)
            return await _system(tx, name)

    async def disable(self, name: str, now: int) -> System:
        async with self.db.write() as tx:
            system = await _system(tx, name)
            if system.state not in ("active", "pending"):
                raise ApiError(409, f"system {name} is {system.state}")
            await tx.execute("UPDATE systems SET state = 'disabled' WHERE name = ?", (name,))
            await tx.execute(_BUMP_GENERATION)
            await tx.execute(
                "UPDATE certificates SET revoked_at = ?, revoke_reason = 'hold' "
                "WHERE system_name = ? AND revoked_at IS NULL", (now, name))
            await tx.execute(_BUMP_CRL)
            return await _system(tx, name)

    async def enable(self, name: str) -> System:
        async with self.db.write() as tx:
            system = await _system(tx, name)
            if system.state != "disabled":
                raise ApiError(409, f"system {name} is {system.state}, not disabled")
            await tx.execute("UPDATE systems SET state = 'active' WHERE name = ?", (name,))
            await tx.execute(_BUMP_GENERATION)
            await tx.execute(
                "UPDATE certificates SET revoked_at = NULL, revoke_reason = NULL "
                "WHERE system_name = ? AND revoke_reason = 'hold'", (name,))
            await tx.execute(_BUMP_CRL)
            return await _system(tx, name)

    async def revoke(self, name: str, now: int) -> System:
        async with self.db.write() as tx:
            system = await _system(tx, name)
            if system.state == "revoked":
                raise ApiError(409, f"system {name} is already revoked")
            await tx.execute("UPDATE systems SET state = 'revoked' WHERE name = ?", (name,))
            await tx.execute(_BUMP_GENERATION)
            await _revoke_certs(tx, name, now)
            return await _system(tx, name)

    async def remove(self, name: str, now: int) -> list[str]:
        """Revoke and forget a system (`systems remove`, DELETE /v1/admin/systems/NAME); the
        names of the gateway policies that went with it."""
        async with self.db.write() as tx:
            await _system(tx, name)
            return await _forget(tx, name, now)

    async def reap_ephemeral(self, offline_since: int, online: set[str], now: int) -> list[str]:
        """Remove every ephemeral system last seen at or before ``offline_since`` that is not in
        ``online``, exactly as remove() does; one transaction for all. Noted last-seen times
        are flushed first."""
        await self.flush_seen()
        async with self.db.write() as tx:
            rows = await tx.fetchall(
                "SELECT name FROM systems WHERE ephemeral = 1 "
                "AND COALESCE(last_seen, enrolled_at) <= ? ORDER BY name", (offline_since,))
            names = [str(r["name"]) for r in rows if r["name"] not in online]
            for name in names:
                await _forget(tx, name, now)
            return names

    async def set_tags(self, name: str, add: tuple[str, ...], remove: tuple[str, ...],
                       *, fits: Callable[[System], None] | None = None) -> System:
        """Change a system's tags; they appear in its certificate from the next renewal.

        ``fits`` (authority.certificate_fits) sees the system as changed, inside the
        transaction: if it raises, nothing is written."""
        async with self.db.write() as tx:
            system = await _system(tx, name)
            tags = (set(system.tags) | set(add)) - set(remove)
            await tx.execute("UPDATE systems SET tags = ? WHERE name = ?",
                             (json.dumps(sorted(tags)), name))
            await tx.execute(_BUMP_GENERATION)
            changed = await _system(tx, name)
            if fits is not None:
                fits(changed)
            return changed

    async def set_gateway(self, name: str, routes: tuple[ipaddress.IPv4Network, ...],
                          nat: bool, *, fits: Callable[[System], None] | None = None) -> System:
        """Let a system serve ``routes`` (empty: no longer a gateway); in its next certificate.

        Gateway policies naming it stay either way, as a policy may also be made before its
        gateway serves routes: offers and grants are clipped to the routes it serves (none
        after clearing; they return when it serves routes again), while the policy, also a tag
        policy towards name:GATEWAY, still introduces the pairs. Removing the policy ends that;
        removing the system deletes its gateway policies (``_forget``). ``fits`` as for
        set_tags."""
        async with self.db.write() as tx:
            await _system(tx, name)
            await tx.execute(
                "UPDATE systems SET gateway_routes = ?, gateway_nat = ? WHERE name = ?",
                (json.dumps([str(r) for r in routes]), int(nat), name))
            await tx.execute(_BUMP_GENERATION)
            changed = await _system(tx, name)
            if fits is not None:
                fits(changed)
            return changed

    # -- revocation list --------------------------------------------------------------------

    async def crl_number(self) -> int:
        return int(await self.get_meta("crl_number") or "0")

    async def revoked_certificates(self, now: int) -> list[tuple[int, int, str]]:
        """(serial, revoked_at, reason) of revoked or held certificates not yet expired."""
        async with self.db.read() as tx:
            return await _revoked(tx, now)

    # -- replay protection ------------------------------------------------------------------

    async def use_nonce(self, nonce: str, now: int) -> bool:
        """Record a request nonce; False if it was seen before (a replay)."""
        async with self.db.write(serialized=False) as tx:
            await tx.execute("DELETE FROM used_nonces WHERE seen_at < ?",
                             (now - NONCE_RETENTION,))
            return await tx.execute(
                "INSERT INTO used_nonces (nonce, seen_at) VALUES (?, ?) "
                "ON CONFLICT (nonce) DO NOTHING", (nonce, now)) == 1

    # -- intents and tag policies (see enclave.policy) --------------------------------------

    async def put_intent(self, from_name: str, to_name: str, statement: bytes,
                         signature: bytes, issued_at: int, expires_at: int | None,
                         policy: str | None) -> None:
        """Store (or replace) FROM's signed intent for TO."""
        async with self.db.write(serialized=False) as tx:
            await tx.execute(
                "INSERT INTO intents (from_name, to_name, statement, signature, issued_at, "
                "expires_at, policy) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (from_name, to_name) DO UPDATE SET statement = excluded.statement, "
                "signature = excluded.signature, issued_at = excluded.issued_at, "
                "expires_at = excluded.expires_at, policy = excluded.policy",
                (from_name, to_name, statement, signature, issued_at, expires_at, policy))

    async def delete_intent(self, from_name: str, to_name: str, *,
                            policy: str | None = None) -> bool:
        """Delete FROM's intent for TO (with ``policy``: only the one that policy produced)."""
        sql = "DELETE FROM intents WHERE from_name = ? AND to_name = ?"
        params: tuple[str, ...] = (from_name, to_name)
        if policy is not None:
            sql, params = sql + " AND policy = ?", (*params, policy)
        async with self.db.write(serialized=False) as tx:
            return await tx.execute(sql, params) == 1

    async def list_intents(self, from_name: str | None = None) -> list[IntentRecord]:
        """All intents, or one holder's."""
        async with self.db.read() as tx:
            return await _intents(tx, from_name)

    async def add_policy(self, name: str, from_sel: str, to_sel: str, now: int, *,
                         gateway: str | None = None, routes: tuple[str, ...] = (),
                         acl: tuple[str, ...] = ("any",)) -> None:
        """A tag policy; with ``gateway`` a gateway access policy (to_sel is name:GATEWAY),
        whose gateway must be an enrolled system (404 otherwise, checked in the same
        transaction)."""
        async with self.db.write() as tx:
            if await tx.fetchone("SELECT 1 AS x FROM policies WHERE name = ?", (name,)):
                raise ApiError(409, f"policy {name!r} exists")
            if gateway is not None:
                await _system(tx, gateway)
            await tx.execute(
                "INSERT INTO policies (name, from_sel, to_sel, created_at, gateway, routes, acl) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, from_sel, to_sel, now, gateway, json.dumps(list(routes)),
                 json.dumps(list(acl))))
            await tx.execute(_BUMP_GENERATION)

    async def list_policies(self) -> list[Policy]:
        """Every policy (tag and gateway), by name."""
        async with self.db.read() as tx:
            return await _policies(tx)

    async def list_gateway_policies(self) -> list[GatewayPolicyRow]:
        """(name, from_sel, gateway, routes, acl) of the gateway access policies."""
        return [(p.name, p.from_sel, p.gateway, list(p.routes), list(p.acl))
                for p in await self.list_policies() if p.gateway is not None]

    async def remove_policy(self, name: str, *, gateway_only: bool = False) -> None:
        """Drop a policy and the counter-signed intents it produced (``gateway_only``: only if
        it is a gateway access policy, else 404)."""
        async with self.db.write() as tx:
            sql = "DELETE FROM policies WHERE name = ?"
            if gateway_only:
                sql += " AND gateway IS NOT NULL"
            if await tx.execute(sql, (name,)) != 1:
                raise ApiError(404, f"no {'gateway ' if gateway_only else ''}policy {name!r}")
            await tx.execute("DELETE FROM intents WHERE policy = ?", (name,))
            await tx.execute(_BUMP_GENERATION)

    # -- the hub's view ---------------------------------------------------------------------

    async def snapshot(self, now: int, certificates_for: set[str] | frozenset[str] = frozenset()
                       ) -> Snapshot:
        """Systems, revoked serials, CRL number, intents, policies (one consistent read), and
        the current certificate of each system in ``certificates_for``."""
        async with self.db.read() as tx:
            rows = await tx.fetchall(_SYSTEM_SQL + " ORDER BY s.enrolled_at, s.name")
            systems = {s.name: s for s in map(self._system, rows)}
            self._parsed = {n: v for n, v in self._parsed.items() if n in systems}
            revoked = frozenset(serial for serial, _at, _r in await _revoked(tx, now))
            number = await tx.fetchone("SELECT value FROM meta WHERE key = 'crl_number'")
            intents = tuple(await _intents(tx, None))
            policies = tuple(await _policies(tx))
            certs = await self._certificates(tx, now, certificates_for) if certificates_for \
                else {}
        return Snapshot(now, systems, revoked, int(number["value"]) if number else 0, intents,
                        policies, certs)

    def _system(self, row: Row) -> System:
        """System.from_row, from the last parse when the row is unchanged."""
        key = tuple(row.values())
        known = self._parsed.get(row["name"])
        if known is not None and known[0] == key:
            return known[1]
        system = System.from_row(row)
        self._parsed[system.name] = (key, system)
        return system

    async def snapshot_of(self, now: int, touched: set[str] | frozenset[str],
                          also: set[str] | frozenset[str] = frozenset()) -> Snapshot:
        """The part of the store a change to ``touched`` concerns (one consistent read): every
        intent from or to a touched system; the systems, current certificates and revoked
        serials of the touched systems, of ``also`` and of every peer those intents name; the
        CRL number and the policies. The control hub decides a touched system's pairs from
        it exactly as from a whole snapshot()."""
        async with self.db.read() as tx:
            wanted = sorted(touched)
            intents: dict[tuple[str, str], IntentRecord] = {}
            for chunk in _chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                for r in await tx.fetchall(
                        "SELECT from_name, to_name, issued_at, expires_at, policy FROM intents "
                        f"WHERE from_name IN ({marks}) UNION "
                        "SELECT from_name, to_name, issued_at, expires_at, policy FROM intents "
                        f"WHERE to_name IN ({marks})", [*chunk, *chunk]):
                    record = IntentRecord.from_row(r)
                    intents[(record.from_name, record.to_name)] = record
            names = set(touched) | set(also)
            for a, b in intents:
                names.update((a, b))
            systems: dict[str, System] = {}
            revoked: set[int] = set()
            for chunk in _chunks(sorted(names)):
                marks = ", ".join("?" * len(chunk))
                for r in await tx.fetchall(_SYSTEM_SQL + f" WHERE s.name IN ({marks})", chunk):
                    system = self._system(r)
                    systems[system.name] = system
                revoked.update(int(r["serial"]) for r in await tx.fetchall(
                    "SELECT serial FROM certificates WHERE revoked_at IS NOT NULL "
                    f"AND not_after > ? AND system_name IN ({marks})", [now, *chunk]))
            number = await tx.fetchone("SELECT value FROM meta WHERE key = 'crl_number'")
            policies = tuple(await _policies(tx))
            certs = await self._certificates(tx, now, names, keep=True)
        return Snapshot(now, systems, frozenset(revoked), int(number["value"]) if number else 0,
                        tuple(intents[k] for k in sorted(intents)), policies, certs)

    async def _certificates(self, tx: Tx, now: int, names: set[str] | frozenset[str],
                            keep: bool = False) -> dict[str, IssuedCert]:
        """The current certificate of each of ``names``; ``keep``: a partial read, which
        leaves the remembered DER of other systems alone."""
        if keep:
            rows = []
            for chunk in _chunks(sorted(names)):
                marks = ", ".join("?" * len(chunk))
                rows += await tx.fetchall(
                    "SELECT system_name, serial, not_before, not_after FROM certificates "
                    f"WHERE revoked_at IS NULL AND not_after > ? AND system_name IN ({marks}) "
                    "ORDER BY system_name, not_after DESC", [now, *chunk])
        else:
            rows = await tx.fetchall(
                "SELECT system_name, serial, not_before, not_after FROM certificates "
                "WHERE revoked_at IS NULL AND not_after > ? ORDER BY system_name, not_after DESC",
                (now,))
        newest: dict[str, tuple[int, int, int]] = {}
        for r in rows:
            if r["system_name"] in names and r["system_name"] not in newest:
                newest[r["system_name"]] = (int(r["serial"]), int(r["not_before"]),
                                            int(r["not_after"]))
        missing = [serial for serial, _b, _a in newest.values() if serial not in self._der]
        for start in range(0, len(missing), _DER_CHUNK):
            serials = missing[start:start + _DER_CHUNK]
            marks = ", ".join("?" * len(serials))
            for r in await tx.fetchall(
                    f"SELECT serial, der FROM certificates WHERE serial IN ({marks})", serials):
                self._der[int(r["serial"])] = bytes(r["der"])
        if not keep:
            live = {serial for serial, _b, _a in newest.values()}
            self._der = {s: d for s, d in self._der.items() if s in live}
        return {name: IssuedCert(serial, self._der[serial], before, after)
                for name, (serial, before, after) in newest.items()}


# -- statements shared by several operations (inside the caller's transaction) ---------------

def _chunks(names: list[str]) -> list[list[str]]:
    """``names`` in lists short enough for one IN (...) each."""
    return [names[i:i + _DER_CHUNK] for i in range(0, len(names), _DER_CHUNK)]


async def _system(tx: Tx, name: str) -> System:
    row = await tx.fetchone(_SYSTEM_SQL + " WHERE s.name = ?", (name,))
    if row is None:
        raise ApiError(404, f"no system named {name!r}")
    return System.from_row(row)


async def _current_certificate(tx: Tx, name: str, now: int) -> IssuedCert | None:
    row = await tx.fetchone(
        "SELECT serial, der, not_before, not_after FROM certificates "
        "WHERE system_name = ? AND revoked_at IS NULL AND not_after > ? "
        "ORDER BY not_after DESC LIMIT 1", (name, now))
    return None if row is None else IssuedCert(
        int(row["serial"]), bytes(row["der"]), int(row["not_before"]), int(row["not_after"]))


async def _allocate_name(tx: Tx) -> str:
    for _ in range(_NAME_ATTEMPTS):
        name = random_system_name()
        mac = format_mac(mac_for_name(name))
        clash = await tx.fetchone(
            "SELECT 1 AS x FROM systems WHERE name = ? OR mac = ? "
            "UNION SELECT 1 AS x FROM retired_names WHERE name = ?", (name, mac, name))
        if clash is None:
            return name
    raise ApiError(503, "could not allocate a unique system name")


async def _allocate_ip(tx: Tx, overlay: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    usable = overlay.num_addresses - 2  # never the network or broadcast address
    for _ in range(_NAME_ATTEMPTS):
        candidate = overlay.network_address + 1 + secrets.randbelow(usable)
        if not await tx.fetchone("SELECT 1 AS x FROM systems WHERE overlay_ip = ?",
                                 (str(candidate),)):
            return candidate
    used = {r["overlay_ip"] for r in await tx.fetchall("SELECT overlay_ip FROM systems")}
    for candidate in overlay.hosts():
        if str(candidate) not in used:
            return candidate
    raise ApiError(503, f"overlay range {overlay} is full")


async def _issue(tx: Tx, system: System, issue: Issuer) -> IssuedCert:
    cert = issue(system)
    await tx.execute(
        "INSERT INTO certificates (serial, system_name, der, not_before, not_after) "
        "VALUES (?, ?, ?, ?, ?)",
        (cert.serial, system.name, cert.der, cert.not_before, cert.not_after))
    return cert


async def _forget(tx: Tx, name: str, now: int) -> list[str]:
    """The one removal path (inside the caller's transaction): certificates revoked (CRL
    bumped), its own intents and every intent naming it deleted, the gateway policies whose
    gateway it is deleted (with the intents they produced; a retired name can never match
    again), the name retired, the row gone; returns those policies' names. The hub's next
    pass withdraws it from its peers (reason "revoked"), closes its session, pushes the CRL
    and each holder's shorter intent list. Plain tag policies are left alone, also those
    with a name:SYSTEM selector for it."""
    await _revoke_certs(tx, name, now)
    await tx.execute("DELETE FROM intents WHERE from_name = ? OR to_name = ?", (name, name))
    policies = [str(r["name"]) for r in await tx.fetchall(
        "SELECT name FROM policies WHERE gateway = ? ORDER BY name", (name,))]
    await tx.execute("DELETE FROM intents WHERE policy IN "
                     "(SELECT name FROM policies WHERE gateway = ?)", (name,))
    await tx.execute("DELETE FROM policies WHERE gateway = ?", (name,))
    await tx.execute("INSERT INTO retired_names (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                     (name,))
    await tx.execute("DELETE FROM systems WHERE name = ?", (name,))
    await tx.execute(_BUMP_GENERATION)
    return policies


async def _revoke_certs(tx: Tx, name: str, now: int) -> None:
    await tx.execute(
        "UPDATE certificates SET revoked_at = COALESCE(revoked_at, ?), "
        "revoke_reason = 'cessation' "
        "WHERE system_name = ? AND (revoked_at IS NULL OR revoke_reason = 'hold')", (now, name))
    await tx.execute(_BUMP_CRL)


async def _revoked(tx: Tx, now: int) -> list[tuple[int, int, str]]:
    rows = await tx.fetchall(
        "SELECT serial, revoked_at, revoke_reason FROM certificates "
        "WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial", (now,))
    return [(int(r["serial"]), int(r["revoked_at"]), str(r["revoke_reason"])) for r in rows]


async def _intents(tx: Tx, from_name: str | None) -> list[IntentRecord]:
    sql = "SELECT from_name, to_name, issued_at, expires_at, policy FROM intents"
    if from_name is None:
        rows = await tx.fetchall(sql + " ORDER BY from_name, to_name")
    else:
        rows = await tx.fetchall(sql + " WHERE from_name = ? ORDER BY to_name", (from_name,))
    return [IntentRecord.from_row(r) for r in rows]


async def _policies(tx: Tx) -> list[Policy]:
    rows = await tx.fetchall("SELECT name, from_sel, to_sel, created_at, gateway, routes, acl "
                             "FROM policies ORDER BY name")
    return [Policy.from_row(r) for r in rows]
