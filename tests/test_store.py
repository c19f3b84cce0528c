
import pytest

from smki.errors import BadInputError, ConflictError
from smki.store import CertificateRecord, find_certificate, insert_certificate, list_certificates, open_database, transaction
from smki.store.database import MIGRATIONS, SCHEMA_VERSION


def record(serial="4A" * 16, **overrides):
    values = dict(serial_hex=serial, issuer_key_id="4F5688D7EC933BE2", certificate_type="organisation",
                  subject_key_id="448997 92D196F4B8".replace(" ", ""), status="I", not_before="2026-01-01T00:00:00+00:00",
                  not_after="2035-12-31T23:59:59+00:00", der=b"\x30\x00", entity_id="90B3D51F30010000", role="02",
                  key_usage="DS", policy_name="SMKI Organisation Certificate Policy", policy_version="1.0", policy_sha256="ab" * 32)
    values.update(overrides)
    return CertificateRecord(**values)


def test_migrations_are_applied_once_and_recorded(tmp_path):
    connection = open_database(tmp_path / "smki.db", create=True)
    versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations")]
    assert versions == [version for version, _, _ in MIGRATIONS]
    connection.close()
    again = open_database(tmp_path / "smki.db")
    assert [row[0] for row in again.execute("SELECT version FROM schema_migrations")] == versions


def test_a_newer_schema_is_refused(tmp_path):
    connection = open_database(tmp_path / "smki.db", create=True)
    connection.execute("INSERT INTO schema_migrations VALUES (?, 'future', 'now')", (SCHEMA_VERSION + 1,))
    connection.close()
    with pytest.raises(ConflictError, match="newer than this smki"):
        open_database(tmp_path / "smki.db")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(BadInputError, match="no smki database"):
        open_database(tmp_path / "absent.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BadInputError, match="not an smki database"):
        open_database(tmp_path / "junk.db")


def test_records_round_trip_with_their_policy(tmp_path):
    connection = open_database(tmp_path / "smki.db", create=True)
    with transaction(connection):
        insert_certificate(connection, record())
    [found] = find_certificate(connection, "4a" * 16)
    assert found.policy_version == "1.0" and found.policy_sha256 == "ab" * 32 and found.der == b"\x30\x00"
    assert list_certificates(connection, entity_id="90B3D51F30010000")[0].serial_hex == "4A" * 16
    assert list_certificates(connection, status="R") == []
    with pytest.raises(BadInputError, match="not hexadecimal"):
        find_certificate(connection, "XYZ")


def test_a_repeated_serial_from_one_issuer_is_refused_and_the_transaction_rolls_back(tmp_path):
    connection = open_database(tmp_path / "smki.db", create=True)
    with transaction(connection):
        insert_certificate(connection, record())
    with pytest.raises(ConflictError, match="already recorded"):
        with transaction(connection):
            insert_certificate(connection, record(serial="5B" * 16))
            insert_certificate(connection, record())
    assert [r.serial_hex for r in list_certificates(connection)] == ["4A" * 16]  # 5B... rolled back too
    with transaction(connection):  # the same serial from another issuer is a different certificate
        insert_certificate(connection, record(issuer_key_id="47D40AF3412904A0"))
    assert len(find_certificate(connection, "4A" * 16)) == 2


def test_a_new_database_is_readable_by_its_owner_only(tmp_path):
    """The audit trail, password hashes and sessions live in these files: 0600 whatever the umask (hostile review)."""
    import os

    old = os.umask(0o022)
    try:
        connection = open_database(tmp_path / "state" / "smki.db", create=True)
        connection.close()
    finally:
        os.umask(old)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "state").iterdir()}
    assert modes and set(modes.values()) == {"0o600"}, modes
