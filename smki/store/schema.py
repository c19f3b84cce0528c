"""The store's schema: versioned migrations, each written once per dialect.

SQLite's DDL is the DDL that shipped (never edited: existing databases carry it in sqlite_master).
PostgreSQL's is written out beside it, column for column, with the types the old run-time translator
gave (so a database it created keeps opening): TEXT is `TEXT COLLATE "C"` (SQLite compares and sorts
text by bytes; so does this), INTEGER is BIGINT (SQLite's integers are 64-bit), BLOB is BYTEA.
tests/test_store_schema.py checks that both dialects produce the same tables, columns and indexes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smki.store.connection import Dialect
from smki.store.lodged_crls import create_listed_serials


@dataclass(frozen=True)
class Ddl:
    """One migration's DDL for each dialect (statements separated by ';')."""

    sqlite: str
    postgresql: str

    def statements(self, dialect: Dialect) -> list[str]:
        text = self.postgresql if dialect is Dialect.POSTGRESQL else self.sqlite
        return [statement for statement in text.split(";") if statement.strip()]


SCHEMA_MIGRATIONS = Ddl(
    sqlite="CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
    postgresql='CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT COLLATE "C" NOT NULL, '
               'applied_at TEXT COLLATE "C" NOT NULL)')

_SQLITE_1 = """
        CREATE TABLE certificates (
            serial_hex       TEXT NOT NULL,
            issuer_key_id    TEXT NOT NULL,      -- the issuing CA's SKI (hex): serials are unique per issuer
            certificate_type TEXT NOT NULL,      -- root, issuing-ca, organisation, device
            subject_key_id   TEXT NOT NULL,
            entity_id        TEXT,               -- EUI-64 (hex) of the organisation or device
            role             TEXT,               -- RemotePartyRole OU code, organisation certificates
            key_usage        TEXT,               -- DS or KA, end-entity certificates
            status           TEXT NOT NULL,      -- RepositoryStatus code: P, I, N, E, R
            not_before       TEXT NOT NULL,
            not_after        TEXT NOT NULL,
            policy_name      TEXT,
            policy_version   TEXT,
            policy_sha256    TEXT,
            request_sha256   TEXT,               -- digest of the request (CSR or public key) it answered
            issued_at        TEXT NOT NULL,
            der              BLOB NOT NULL,
            PRIMARY KEY (issuer_key_id, serial_hex)
        );
        CREATE INDEX certificates_entity ON certificates (entity_id, key_usage);
        CREATE INDEX certificates_subject_key ON certificates (subject_key_id);
    """

# Shipped from smki/audit/trail.py, written flush left: kept byte for byte.
_SQLITE_2 = """
CREATE TABLE IF NOT EXISTS audit_entries (
    seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, operation TEXT NOT NULL,
    subject TEXT NOT NULL, policy TEXT, outcome TEXT NOT NULL, details TEXT NOT NULL,
    prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY, head_hash TEXT NOT NULL, time TEXT NOT NULL, context TEXT NOT NULL,
    key_id TEXT NOT NULL, signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_keys (key_id TEXT PRIMARY KEY, public_key_pem TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_entries_operation ON audit_entries (operation);
"""

_SQLITE_3 = """
        CREATE TABLE adopted_policies (
            kind TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
            adopted_at TEXT NOT NULL, actor TEXT NOT NULL
        )
    """

_SQLITE_4 = """
        CREATE TABLE revocations (
            issuer_key_id TEXT NOT NULL, serial_hex TEXT NOT NULL, revoked_at TEXT NOT NULL, reason TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, serial_hex),
            FOREIGN KEY (issuer_key_id, serial_hex) REFERENCES certificates (issuer_key_id, serial_hex)
        );
        CREATE TABLE crl_numbers (issuer_key_id TEXT PRIMARY KEY, last_number INTEGER NOT NULL, issued_at TEXT NOT NULL)
    """

_SQLITE_5 = """
        CREATE TABLE batches (
            batch_id       TEXT PRIMARY KEY,     -- SHA-256 over the batch's entry names and contents
            source         TEXT NOT NULL,
            entry_count    INTEGER NOT NULL,
            issuer_key_id  TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            started_at     TEXT NOT NULL,
            finished_at    TEXT                  -- NULL while the batch is unfinished (resumable)
        );
        CREATE TABLE batch_entries (
            batch_id       TEXT NOT NULL REFERENCES batches (batch_id),
            name           TEXT NOT NULL,        -- the request's file name in the batch
            status         TEXT NOT NULL,        -- success, error, anomaly, ineligible
            code           TEXT NOT NULL,        -- CR:/FM:/IN:/CA: outcome code
            detail         TEXT,
            device_id      TEXT,
            serial_hex     TEXT,                 -- the issued certificate, on success
            request_sha256 TEXT,
            PRIMARY KEY (batch_id, name)
        );
        CREATE INDEX certificates_serial ON certificates (serial_hex)
    """

_SQLITE_6 = """
        CREATE TABLE lodged_crls (
            issuer_key_id TEXT NOT NULL,         -- the issuing CA's SKI (hex) = the CRL's AKI
            crl_number    TEXT NOT NULL,         -- cRLNumber as 40 hex digits (up to 20 octets), fixed width: text order is numeric order
            kind          TEXT NOT NULL CHECK (kind IN ('crl', 'arl')),  -- arl when the issuer is a root
            this_update   TEXT NOT NULL,
            next_update   TEXT NOT NULL,
            sha256        TEXT NOT NULL,
            der           BLOB NOT NULL,
            lodged_at     TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, crl_number)
        );
        CREATE TABLE certificate_status_changes (
            issuer_key_id TEXT NOT NULL,
            serial_hex    TEXT NOT NULL,
            status        TEXT NOT NULL,         -- the new RepositoryStatus code
            changed_at    TEXT NOT NULL,
            source        TEXT NOT NULL,         -- what changed it, e.g. crl <ISSUER-SKI> <number>
            PRIMARY KEY (issuer_key_id, serial_hex, status, changed_at)
        );
        CREATE INDEX certificate_status_changes_time ON certificate_status_changes (changed_at);
        CREATE INDEX certificates_issued_at ON certificates (issued_at)
    """

_POSTGRESQL_1 = """
    CREATE TABLE certificates (
        serial_hex TEXT COLLATE "C" NOT NULL, issuer_key_id TEXT COLLATE "C" NOT NULL, certificate_type TEXT COLLATE "C" NOT NULL,
        subject_key_id TEXT COLLATE "C" NOT NULL, entity_id TEXT COLLATE "C", role TEXT COLLATE "C", key_usage TEXT COLLATE "C",
        status TEXT COLLATE "C" NOT NULL, not_before TEXT COLLATE "C" NOT NULL, not_after TEXT COLLATE "C" NOT NULL,
        policy_name TEXT COLLATE "C", policy_version TEXT COLLATE "C", policy_sha256 TEXT COLLATE "C",
        request_sha256 TEXT COLLATE "C", issued_at TEXT COLLATE "C" NOT NULL, der BYTEA NOT NULL,
        PRIMARY KEY (issuer_key_id, serial_hex)
    );
    CREATE INDEX certificates_entity ON certificates (entity_id, key_usage);
    CREATE INDEX certificates_subject_key ON certificates (subject_key_id)
"""

_POSTGRESQL_2 = """
    CREATE TABLE IF NOT EXISTS audit_entries (
        seq BIGINT PRIMARY KEY, time TEXT COLLATE "C" NOT NULL, actor TEXT COLLATE "C" NOT NULL,
        operation TEXT COLLATE "C" NOT NULL, subject TEXT COLLATE "C" NOT NULL, policy TEXT COLLATE "C",
        outcome TEXT COLLATE "C" NOT NULL, details TEXT COLLATE "C" NOT NULL, prev_hash TEXT COLLATE "C" NOT NULL,
        entry_hash TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE IF NOT EXISTS audit_checkpoints (
        seq BIGINT PRIMARY KEY, head_hash TEXT COLLATE "C" NOT NULL, time TEXT COLLATE "C" NOT NULL,
        context TEXT COLLATE "C" NOT NULL, key_id TEXT COLLATE "C" NOT NULL, signature BYTEA NOT NULL
    );
    CREATE TABLE IF NOT EXISTS audit_keys (key_id TEXT COLLATE "C" PRIMARY KEY, public_key_pem TEXT COLLATE "C" NOT NULL);
    CREATE INDEX IF NOT EXISTS audit_entries_operation ON audit_entries (operation)
"""

_POSTGRESQL_3 = """
    CREATE TABLE adopted_policies (
        kind TEXT COLLATE "C" PRIMARY KEY, name TEXT COLLATE "C" NOT NULL, version TEXT COLLATE "C" NOT NULL,
        sha256 TEXT COLLATE "C" NOT NULL, adopted_at TEXT COLLATE "C" NOT NULL, actor TEXT COLLATE "C" NOT NULL
    )
"""

_POSTGRESQL_4 = """
    CREATE TABLE revocations (
        issuer_key_id TEXT COLLATE "C" NOT NULL, serial_hex TEXT COLLATE "C" NOT NULL, revoked_at TEXT COLLATE "C" NOT NULL,
        reason TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (issuer_key_id, serial_hex),
        FOREIGN KEY (issuer_key_id, serial_hex) REFERENCES certificates (issuer_key_id, serial_hex)
    );
    CREATE TABLE crl_numbers (issuer_key_id TEXT COLLATE "C" PRIMARY KEY, last_number BIGINT NOT NULL, issued_at TEXT COLLATE "C" NOT NULL)
"""

_POSTGRESQL_5 = """
    CREATE TABLE batches (
        batch_id TEXT COLLATE "C" PRIMARY KEY, source TEXT COLLATE "C" NOT NULL, entry_count BIGINT NOT NULL,
        issuer_key_id TEXT COLLATE "C" NOT NULL, policy_version TEXT COLLATE "C" NOT NULL, started_at TEXT COLLATE "C" NOT NULL,
        finished_at TEXT COLLATE "C"
    );
    CREATE TABLE batch_entries (
        batch_id TEXT COLLATE "C" NOT NULL REFERENCES batches (batch_id), name TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL, detail TEXT COLLATE "C", device_id TEXT COLLATE "C",
        serial_hex TEXT COLLATE "C", request_sha256 TEXT COLLATE "C",
        PRIMARY KEY (batch_id, name)
    );
    CREATE INDEX certificates_serial ON certificates (serial_hex)
"""

_POSTGRESQL_6 = """
    CREATE TABLE lodged_crls (
        issuer_key_id TEXT COLLATE "C" NOT NULL, crl_number TEXT COLLATE "C" NOT NULL,
        kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('crl', 'arl')), this_update TEXT COLLATE "C" NOT NULL,
        next_update TEXT COLLATE "C" NOT NULL, sha256 TEXT COLLATE "C" NOT NULL, der BYTEA NOT NULL,
        lodged_at TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (issuer_key_id, crl_number)
    );
    CREATE TABLE certificate_status_changes (
        issuer_key_id TEXT COLLATE "C" NOT NULL, serial_hex TEXT COLLATE "C" NOT NULL, status TEXT COLLATE "C" NOT NULL,
        changed_at TEXT COLLATE "C" NOT NULL, source TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (issuer_key_id, serial_hex, status, changed_at)
    );
    CREATE INDEX certificate_status_changes_time ON certificate_status_changes (changed_at);
    CREATE INDEX certificates_issued_at ON certificates (issued_at)
"""

_SQLITE_8 = """
        CREATE TABLE subscribers (
            name       TEXT PRIMARY KEY,         -- the register's key: the party's name for its system
            eui64      TEXT NOT NULL,            -- 16 hex digits, upper case
            roles      TEXT NOT NULL,            -- RemotePartyRole OU codes, comma-separated, e.g. 02,03
            interfaces TEXT NOT NULL,            -- smki.register.Interface values, comma-separated
            status     TEXT NOT NULL,            -- active, suspended, removed
            created_at TEXT NOT NULL,
            changed_at TEXT NOT NULL
        );
        CREATE TABLE subscriber_certificates (
            match_key     TEXT PRIMARY KEY,      -- fingerprint:<SHA-256 of the DER>, or issuer-and-key:<SHA-256 of the issuer DN DER>:<SHA-256 of the SPKI>
            name          TEXT NOT NULL REFERENCES subscribers (name),
            match         TEXT NOT NULL,         -- fingerprint, issuer-and-key
            fingerprint   TEXT NOT NULL,         -- SHA-256 of the certificate registered (or of the one named by fingerprint)
            issuer        TEXT,                  -- the registered certificate's issuer DN (RFC 4514), when registered from the certificate
            registered_at TEXT NOT NULL
        );
        CREATE INDEX subscriber_certificates_name ON subscriber_certificates (name)
    """

_POSTGRESQL_8 = """
    CREATE TABLE subscribers (
        name TEXT COLLATE "C" PRIMARY KEY, eui64 TEXT COLLATE "C" NOT NULL, roles TEXT COLLATE "C" NOT NULL,
        interfaces TEXT COLLATE "C" NOT NULL, status TEXT COLLATE "C" NOT NULL, created_at TEXT COLLATE "C" NOT NULL,
        changed_at TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE subscriber_certificates (
        match_key TEXT COLLATE "C" PRIMARY KEY, name TEXT COLLATE "C" NOT NULL REFERENCES subscribers (name),
        match TEXT COLLATE "C" NOT NULL, fingerprint TEXT COLLATE "C" NOT NULL, issuer TEXT COLLATE "C",
        registered_at TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX subscriber_certificates_name ON subscriber_certificates (name)
"""

_SQLITE_9 = """
        CREATE TABLE batch_queue (
            batch_number  INTEGER PRIMARY KEY,   -- the BatchId its subscriber polls with, never reused
            client_id     TEXT NOT NULL,         -- the submitter's own ID for the batch
            subscriber    TEXT NOT NULL,         -- the Authorised Subscriber's register name
            channel       TEXT NOT NULL,         -- web-service, portal
            requester     TEXT NOT NULL,         -- the RemotePartyRole it requests as
            entry_count   INTEGER NOT NULL,
            upload        BLOB,                  -- a ZIP of .csr entries, NULL once purged
            upload_sha256 TEXT NOT NULL,         -- of the upload as accepted: a mismatch is TAMPERED
            status        TEXT NOT NULL,         -- BatchStatus: PENDING, REJECTED, PARSING, QUEUED, PROCESSING, PAUSED, COMPLETED, TAMPERED
            submitted_at  TEXT NOT NULL,
            decided_at    TEXT,                  -- the Registration Authority's approval or rejection
            decided_by    TEXT,
            reason        TEXT,
            batch_id      TEXT,                  -- the processed file's digest: its answers in batch_entries
            lease_owner   TEXT,                  -- the processor holding it, until lease_until
            lease_until   TEXT,
            finished_at   TEXT,
            purged_at     TEXT,                  -- its files dropped after the retention period
            response_zip  BLOB,
            status_file   BLOB
        );
        CREATE INDEX batch_queue_subscriber ON batch_queue (subscriber, submitted_at);
        CREATE INDEX batch_queue_status ON batch_queue (status, batch_number);
        CREATE TABLE adhoc_submissions (
            subscriber    TEXT NOT NULL,
            channel       TEXT NOT NULL,
            submitted_at  TEXT NOT NULL
        );
        CREATE INDEX adhoc_submissions_subscriber ON adhoc_submissions (subscriber, channel, submitted_at)
    """

_POSTGRESQL_9 = """
    CREATE TABLE batch_queue (
        batch_number BIGINT PRIMARY KEY, client_id TEXT COLLATE "C" NOT NULL, subscriber TEXT COLLATE "C" NOT NULL,
        channel TEXT COLLATE "C" NOT NULL, requester TEXT COLLATE "C" NOT NULL, entry_count BIGINT NOT NULL, upload BYTEA,
        upload_sha256 TEXT COLLATE "C" NOT NULL, status TEXT COLLATE "C" NOT NULL, submitted_at TEXT COLLATE "C" NOT NULL,
        decided_at TEXT COLLATE "C", decided_by TEXT COLLATE "C", reason TEXT COLLATE "C", batch_id TEXT COLLATE "C",
        lease_owner TEXT COLLATE "C", lease_until TEXT COLLATE "C", finished_at TEXT COLLATE "C", purged_at TEXT COLLATE "C",
        response_zip BYTEA, status_file BYTEA
    );
    CREATE INDEX batch_queue_subscriber ON batch_queue (subscriber, submitted_at);
    CREATE INDEX batch_queue_status ON batch_queue (status, batch_number);
    CREATE TABLE adhoc_submissions (
        subscriber TEXT COLLATE "C" NOT NULL, channel TEXT COLLATE "C" NOT NULL, submitted_at TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX adhoc_submissions_subscriber ON adhoc_submissions (subscriber, channel, submitted_at)
"""

_SQLITE_10 = """
        CREATE TABLE portal_accounts (
            username      TEXT PRIMARY KEY,      -- the SMKI Portal user's login name
            subscriber    TEXT NOT NULL,         -- the Authorised Subscriber (register name) it acts for
            password_hash TEXT NOT NULL,         -- argon2id, PHC string
            status        TEXT NOT NULL,         -- active, locked (by an operator), removed
            locked_until  TEXT,                  -- locked after 5 wrong passwords within an hour, until then
            created_at    TEXT NOT NULL,
            changed_at    TEXT NOT NULL
        );
        CREATE TABLE portal_login_failures (
            username  TEXT NOT NULL,
            failed_at TEXT NOT NULL
        );
        CREATE INDEX portal_login_failures_username ON portal_login_failures (username, failed_at);
        CREATE TABLE portal_sessions (
            token_sha256 TEXT PRIMARY KEY,       -- SHA-256 of the cookie's token (the token itself is never stored)
            kind         TEXT NOT NULL,          -- password, certificate
            subscriber   TEXT NOT NULL,
            username     TEXT,                   -- a password session's account
            fingerprint  TEXT,                   -- a certificate session's client certificate (SHA-256)
            csrf_token   TEXT NOT NULL,
            created_at   TEXT NOT NULL,
            expires_at   TEXT NOT NULL
        );
        CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at)
    """

_POSTGRESQL_10 = """
    CREATE TABLE portal_accounts (
        username TEXT COLLATE "C" PRIMARY KEY, subscriber TEXT COLLATE "C" NOT NULL, password_hash TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL, locked_until TEXT COLLATE "C", created_at TEXT COLLATE "C" NOT NULL,
        changed_at TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE portal_login_failures (username TEXT COLLATE "C" NOT NULL, failed_at TEXT COLLATE "C" NOT NULL);
    CREATE INDEX portal_login_failures_username ON portal_login_failures (username, failed_at);
    CREATE TABLE portal_sessions (
        token_sha256 TEXT COLLATE "C" PRIMARY KEY, kind TEXT COLLATE "C" NOT NULL, subscriber TEXT COLLATE "C" NOT NULL,
        username TEXT COLLATE "C", fingerprint TEXT COLLATE "C", csrf_token TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL, expires_at TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at)
"""

_SQLITE_11 = """
        CREATE TABLE batch_processing (
            singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),  -- one row: the queue's processing, for every processor on every host
            paused      INTEGER NOT NULL,        -- 1 while the operator has paused it
            changed_at  TEXT NOT NULL,           -- when it was last paused or resumed
            changed_by  TEXT NOT NULL,           -- by whom (the authority's actor)
            reason      TEXT                     -- why it was paused
        )
    """

_POSTGRESQL_11 = """
    CREATE TABLE batch_processing (
        singleton BIGINT PRIMARY KEY CHECK (singleton = 1), paused BIGINT NOT NULL, changed_at TEXT COLLATE "C" NOT NULL,
        changed_by TEXT COLLATE "C" NOT NULL, reason TEXT COLLATE "C"
    )
"""

# (version, description, step): a step is DDL per dialect, or a callable run in the migration's
# transaction (it reads connection.dialect where it differs). Append only: never edit a migration that has shipped.
MIGRATIONS: list[tuple[int, str, Ddl | Callable]] = [
    (1, "issued certificates", Ddl(_SQLITE_1, _POSTGRESQL_1)),
    (2, "audit trail", Ddl(_SQLITE_2, _POSTGRESQL_2)),
    (3, "adopted policies", Ddl(_SQLITE_3, _POSTGRESQL_3)),
    (4, "revocations and CRL numbers", Ddl(_SQLITE_4, _POSTGRESQL_4)),
    (5, "device batches and serial search", Ddl(_SQLITE_5, _POSTGRESQL_5)),
    (6, "lodged CRLs and ARLs, repository status changes", Ddl(_SQLITE_6, _POSTGRESQL_6)),
    # This one indexes the lists already lodged.
    (7, "serials named by lodged CRLs and ARLs", create_listed_serials),
    (8, "subscriber register: Authorised Subscribers and their client certificates", Ddl(_SQLITE_8, _POSTGRESQL_8)),
    (9, "the batch queue and the ad hoc submissions the usage rules count", Ddl(_SQLITE_9, _POSTGRESQL_9)),
    (10, "SMKI Portal password accounts, login failures and sessions", Ddl(_SQLITE_10, _POSTGRESQL_10)),
    (11, "the batch queue's processing, paused or resumed by the operator", Ddl(_SQLITE_11, _POSTGRESQL_11)),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
