"""The store: an authority's SQLite database (schema by versioned migrations) and its records."""

from smki.store.certificates import (CertificateRecord, find_certificate, insert_certificate, list_certificates,
                                     search_certificates)
from smki.store.database import SCHEMA_VERSION, open_database, transaction

__all__ = ["SCHEMA_VERSION", "CertificateRecord", "find_certificate", "insert_certificate", "list_certificates",
           "search_certificates",
           "open_database", "transaction"]
