"""The steps every actor takes, written once: open an authority's state and its audit trail,
audit a refused operation, record-audit-release an issued certificate, sign a checkpoint.

The actors (`smki.root`, `smki.issuing`, `smki.librarian`) stand on this floor and never import
each other; the front ends (`smki.cli`, `smki.testing`) call the actors.

Every actor object serves one thread: it keeps one database connection and one HSM session, and
neither may be shared between threads (python-pkcs11 is not thread-safe against SoftHSM). Any number
of objects, in threads or processes, may work on one state: writes are serialised by the database
(a write transaction takes SQLite's lock or PostgreSQL's advisory lock), so cRLNumbers and the audit
chain stay strictly ordered.
"""
