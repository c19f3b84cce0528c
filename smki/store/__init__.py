"""The store: an authority's database (SQLite, or PostgreSQL by URL; schema by versioned migrations written
per dialect) and its records. Every statement lives in this package; driver errors leave it as smki's."""

from smki.store.certificates import (CertificateRecord, find_certificate, insert_certificate, list_certificates,
                                     search_certificates)
from smki.store.connection import Connection, Dialect
from smki.store.database import SCHEMA_VERSION, open_database, transaction

__all__ = ["SCHEMA_VERSION", "CertificateRecord", "Connection", "Dialect", "find_certificate", "insert_certificate",
           "list_certificates", "search_certificates", "open_database", "transaction"]
