"""The platform store: its records, and Store over SQLite (default) or PostgreSQL (``--db``).

    records.py     EnrolmentKey, System, IssuedCert, IntentRecord, Policy, Snapshot
    base.py        Database / Tx: the storage interface a backend implements
    sqlite.py      SqliteDatabase (DATA/platform.db, worker threads)
    postgres.py    PostgresDatabase (psycopg 3 async pool)
    migrations.py  the numbered schema migrations, one list for both
    operations.py  Store: every operation, SQL written once
"""

from enclave.platform.store.operations import Store, is_database_url
from enclave.platform.store.records import (
    NONCE_RETENTION,
    SYSTEM_STATES,
    EnrolmentKey,
    IntentRecord,
    IssuedCert,
    Issuer,
    Policy,
    Snapshot,
    System,
    secret_hash,
)

__all__ = [
    "NONCE_RETENTION", "SYSTEM_STATES", "EnrolmentKey", "IntentRecord", "IssuedCert", "Issuer",
    "Policy", "Snapshot", "Store", "System", "is_database_url", "secret_hash",
]
