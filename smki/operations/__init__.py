"""The steps every actor takes, written once: open an authority's state and its audit trail,
audit a refused operation, record-audit-release an issued certificate, sign a checkpoint.

The actors (`smki.root`, `smki.issuing`, `smki.librarian`) stand on this floor and never import
each other; the front ends (`smki.cli`, `smki.testing`) call the actors.
"""
