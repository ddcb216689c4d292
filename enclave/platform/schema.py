"""SQLite schema migrations, applied in order; PRAGMA user_version = number applied.

Times are UNIX seconds (INTEGER). Never edit a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE enrolment_keys (
        id            TEXT PRIMARY KEY,
        secret_hash   BLOB NOT NULL,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER,                 -- NULL: never
        uses_allowed  INTEGER,                 -- NULL: unlimited
        uses          INTEGER NOT NULL DEFAULT 0,
        tags          TEXT NOT NULL DEFAULT '[]',
        approval      TEXT NOT NULL CHECK (approval IN ('auto', 'gated')),
        ephemeral     INTEGER NOT NULL DEFAULT 0,
        cert_lifetime INTEGER NOT NULL,
        revoked_at    INTEGER,
        CHECK (uses_allowed IS NULL OR uses <= uses_allowed)
    );
    CREATE TABLE systems (
        name          TEXT PRIMARY KEY,
        hostname      TEXT NOT NULL,
        public_key    BLOB NOT NULL UNIQUE,
        overlay_ip    TEXT NOT NULL UNIQUE,
        mac           TEXT NOT NULL UNIQUE,
        tags          TEXT NOT NULL DEFAULT '[]',
        gateway_routes TEXT NOT NULL DEFAULT '[]',
        state         TEXT NOT NULL
                      CHECK (state IN ('pending', 'active', 'disabled', 'revoked')),
        key_id        TEXT NOT NULL,
        ephemeral     INTEGER NOT NULL DEFAULT 0,
        cert_lifetime INTEGER NOT NULL,
        enrolled_at   INTEGER NOT NULL,
        last_seen     INTEGER
    );
    CREATE TABLE certificates (
        serial        INTEGER PRIMARY KEY,
        system_name   TEXT NOT NULL,           -- kept after the system is removed
        der           BLOB NOT NULL,
        not_before    INTEGER NOT NULL,
        not_after     INTEGER NOT NULL,
        revoked_at    INTEGER,
        revoke_reason TEXT CHECK (revoke_reason IN ('hold', 'cessation', 'compromise'))
    );
    CREATE INDEX certificates_by_system ON certificates (system_name);
    CREATE TABLE retired_names (name TEXT PRIMARY KEY);
    CREATE TABLE used_nonces (
        nonce   TEXT PRIMARY KEY,
        seen_at INTEGER NOT NULL
    );
    """,
    # 2: mutual intent (signed intent statements) and tag policies
    """
    CREATE TABLE intents (
        from_name  TEXT NOT NULL,
        to_name    TEXT NOT NULL,              -- as the holder typed it; may name no system
        statement  BLOB NOT NULL,              -- canonical signed statement (enclave.policy)
        signature  BLOB NOT NULL,              -- by from_name's system key
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER,                    -- NULL: until removed
        policy     TEXT,                       -- NULL: own intent; else the tag policy it signs
        PRIMARY KEY (from_name, to_name)
    );
    CREATE TABLE policies (
        name       TEXT PRIMARY KEY,
        from_sel   TEXT NOT NULL,
        to_sel     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
    # 3: gateways (enclave.policy.gateway): NAT or routed mode per gateway system, and gateway
    # access policies (a policy row with a gateway: from_sel may reach `routes` through it)
    """
    ALTER TABLE systems ADD COLUMN gateway_nat INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE policies ADD COLUMN gateway TEXT;            -- NULL: a plain tag policy
    ALTER TABLE policies ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE policies ADD COLUMN acl TEXT NOT NULL DEFAULT '["any"]';
    """,
)
