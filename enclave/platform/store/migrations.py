"""Versioned schema migrations, one list for both backends, applied at every open.

The table ``schema_migrations`` holds the number of every applied migration. A migration's SQL
is written once where SQLite and PostgreSQL agree (``sql``); where they do not (BLOB vs BYTEA,
64-bit integers), ``postgresql`` holds PostgreSQL's own text. Never edit a released migration:
append a new one. Times are UNIX seconds.

SQLite files from before the table (schema version in PRAGMA user_version) are adopted in
place: their versions 1..user_version are recorded as applied. SQLite's user_version is kept
equal to the newest applied number, so an older enclave refuses a newer file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from enclave.platform.errors import StoreError
from enclave.platform.store.base import Database, Tx


@dataclass(frozen=True)
class Migration:
    number: int
    sql: str  # both dialects (or SQLite's, when postgresql is given)
    postgresql: str | None = None

    def text(self, dialect: str) -> str:
        return self.postgresql if dialect == "postgresql" and self.postgresql else self.sql


_INITIAL = """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE enrolment_keys (
        id            TEXT PRIMARY KEY,
        secret_hash   {blob} NOT NULL,
        created_at    {int} NOT NULL,
        expires_at    {int},                   -- NULL: never
        uses_allowed  {int},                   -- NULL: unlimited
        uses          {int} NOT NULL DEFAULT 0,
        tags          TEXT NOT NULL DEFAULT '[]',
        approval      TEXT NOT NULL CHECK (approval IN ('auto', 'gated')),
        ephemeral     INTEGER NOT NULL DEFAULT 0,
        cert_lifetime {int} NOT NULL,
        revoked_at    {int},
        CHECK (uses_allowed IS NULL OR uses <= uses_allowed)
    );
    CREATE TABLE systems (
        name          TEXT PRIMARY KEY,
        hostname      TEXT NOT NULL,
        public_key    {blob} NOT NULL UNIQUE,
        overlay_ip    TEXT NOT NULL UNIQUE,
        mac           TEXT NOT NULL UNIQUE,
        tags          TEXT NOT NULL DEFAULT '[]',
        gateway_routes TEXT NOT NULL DEFAULT '[]',
        state         TEXT NOT NULL
                      CHECK (state IN ('pending', 'active', 'disabled', 'revoked')),
        key_id        TEXT NOT NULL,
        ephemeral     INTEGER NOT NULL DEFAULT 0,
        cert_lifetime {int} NOT NULL,
        enrolled_at   {int} NOT NULL,
        last_seen     {int}
    );
    CREATE TABLE certificates (
        serial        {int} PRIMARY KEY,
        system_name   TEXT NOT NULL,           -- kept after the system is removed
        der           {blob} NOT NULL,
        not_before    {int} NOT NULL,
        not_after     {int} NOT NULL,
        revoked_at    {int},
        revoke_reason TEXT CHECK (revoke_reason IN ('hold', 'cessation', 'compromise'))
    );
    CREATE INDEX certificates_by_system ON certificates (system_name);
    CREATE TABLE retired_names (name TEXT PRIMARY KEY);
    CREATE TABLE used_nonces (
        nonce   TEXT PRIMARY KEY,
        seen_at {int} NOT NULL
    );
"""

_INTENTS = """
    CREATE TABLE intents (
        from_name  TEXT NOT NULL,
        to_name    TEXT NOT NULL,              -- as the holder typed it; may name no system
        statement  {blob} NOT NULL,            -- canonical signed statement (enclave.policy)
        signature  {blob} NOT NULL,            -- by from_name's system key
        issued_at  {int} NOT NULL,
        expires_at {int},                      -- NULL: until removed
        policy     TEXT,                       -- NULL: own intent; else the tag policy it signs
        PRIMARY KEY (from_name, to_name)
    );
    CREATE TABLE policies (
        name       TEXT PRIMARY KEY,
        from_sel   TEXT NOT NULL,
        to_sel     TEXT NOT NULL,
        created_at {int} NOT NULL
    );
"""

_PRESENCE = """
    CREATE TABLE presence (
        name       TEXT PRIMARY KEY,
        node       TEXT NOT NULL,
        report     TEXT NOT NULL,           -- JSON: candidates, nat, local, relay
        seen_at    {int} NOT NULL           -- the node's last heartbeat for it
    );
    CREATE INDEX presence_by_node ON presence (node);
"""

_NODES = """
    CREATE TABLE nodes (
        id         TEXT PRIMARY KEY,        -- the hub's node id (presence.node)
        listen     TEXT NOT NULL,           -- HOST:PORT of its API
        url        TEXT,                    -- the platform URL it serves; NULL: not known
        host       TEXT NOT NULL,
        pid        {int} NOT NULL,
        version    TEXT NOT NULL,
        started_at {int} NOT NULL,
        seen_at    {int} NOT NULL,          -- its last heartbeat
        agents     {int} NOT NULL DEFAULT 0 -- control sessions it held then
    );
"""

_SQLITE_TYPES = {"blob": "BLOB", "int": "INTEGER"}
_POSTGRES_TYPES = {"blob": "BYTEA", "int": "BIGINT"}

MIGRATIONS: tuple[Migration, ...] = (
    # 1: initial schema
    Migration(1, _INITIAL.format(**_SQLITE_TYPES), _INITIAL.format(**_POSTGRES_TYPES)),
    # 2: mutual intent (signed intent statements) and tag policies
    Migration(2, _INTENTS.format(**_SQLITE_TYPES), _INTENTS.format(**_POSTGRES_TYPES)),
    # 3: gateways (enclave.policy.gateway): NAT or routed mode per gateway system, and gateway
    # access policies (a policy row with a gateway: from_sel may reach `routes` through it)
    Migration(3, """
    ALTER TABLE systems ADD COLUMN gateway_nat INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE policies ADD COLUMN gateway TEXT;            -- NULL: a plain tag policy
    ALTER TABLE policies ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE policies ADD COLUMN acl TEXT NOT NULL DEFAULT '["any"]';
    """),
    # 4: presence (enclave.platform.presence): which node each online system is connected to,
    # with what it reported, so nodes on one database introduce each other's systems
    Migration(4, _PRESENCE.format(**_SQLITE_TYPES), _PRESENCE.format(**_POSTGRES_TYPES)),
    # 5: indexes for a fleet: the intents naming a system (the hub's partial read,
    # Store.snapshot_of), and the nonce sweep every intent statement runs (Store.use_nonce)
    Migration(5, """
    CREATE INDEX intents_by_peer ON intents (to_name);
    CREATE INDEX used_nonces_by_time ON used_nonces (seen_at);
    """),
    # 6: nodes (enclave.platform.nodes): one row per running `platform serve` process, with
    # its heartbeat and agent count (`enclave platform nodes`)
    Migration(6, _NODES.format(**_SQLITE_TYPES), _NODES.format(**_POSTGRES_TYPES)),
)
LATEST = MIGRATIONS[-1].number


def split_sql(script: str) -> list[str]:
    """The statements of a script (comments kept; both dialects' scripts split the same)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return [s for s in statements if s and not all(
        part.strip().startswith("--") or not part.strip() for part in s.splitlines())]


async def migrate(db: Database, now: int) -> list[int]:
    """Apply every missing migration in one write transaction; the numbers applied. An
    up-to-date store is only read (opening it needs no write lock)."""
    if await _up_to_date(db):
        return []
    async with db.write() as tx:
        await tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        applied = {int(r["version"]) for r in
                   await tx.fetchall("SELECT version FROM schema_migrations")}
        if tx.dialect == "sqlite" and not applied:
            applied = await _adopt_user_version(tx, now)
        newest = max(applied, default=0)
        if newest > LATEST:
            raise StoreError(f"database schema version {newest} is newer than this enclave "
                             f"({LATEST}); upgrade enclave")
        done = []
        for migration in MIGRATIONS:
            if migration.number in applied:
                continue
            for statement in split_sql(migration.text(tx.dialect)):
                await tx.execute(statement)
            await tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                             (migration.number, now))
            done.append(migration.number)
        if tx.dialect == "sqlite" and done:
            await tx.execute(f"PRAGMA user_version = {LATEST}")
        return done


async def _up_to_date(db: Database) -> bool:
    try:
        async with db.read() as tx:
            rows = await tx.fetchall("SELECT version FROM schema_migrations")
    except StoreError:
        return False  # no migrations table yet
    applied = {int(r["version"]) for r in rows}
    if max(applied, default=0) > LATEST:
        raise StoreError(f"database schema version {max(applied)} is newer than this enclave "
                         f"({LATEST}); upgrade enclave")
    return applied >= {m.number for m in MIGRATIONS}


async def _adopt_user_version(tx: Tx, now: int) -> set[int]:
    row = await tx.fetchone("PRAGMA user_version")
    version = 0 if row is None else int(next(iter(row.values())))
    if version > LATEST:
        raise StoreError(f"database schema version {version} is newer than this enclave "
                         f"({LATEST}); upgrade enclave")
    await tx.executemany("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                         [(n, now) for n in range(1, version + 1)])
    return set(range(1, version + 1))
