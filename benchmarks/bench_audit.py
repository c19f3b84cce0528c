"""Audit append throughput: N entries in one transaction (a 50,000-CSR batch's per-certificate entries).

Run: .venv/bin/python benchmarks/bench_audit.py [--entries 50000]
The budget: auditing may cost at most 10 % of batch issuance at 5,000 certificates/s,
i.e. 50,000 entries in at most 1 s of a 10 s batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from smki.audit import AuditEntry, AuditTrail
from smki.hsm.signer import SoftwareSigner
from smki.store import open_database, transaction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        connection = open_database(Path(directory) / "bench.db", create=True)
        trail = AuditTrail(connection, SoftwareSigner(), checkpoint_every=10_000)
        entries = [AuditEntry("issuing-dca", "certificate.issue", subject={"serial": f"{i:032X}", "device_id": f"{i:016X}"},
                              policy={"name": "device", "version": "1.0", "sha256": "ab" * 32}) for i in range(args.entries)]
        began = time.perf_counter()
        with transaction(connection):
            trail.append(*entries)
            trail.checkpoint("batch")
        elapsed = time.perf_counter() - began
        print(f"smki     audit append of {args.entries:,} entries in one transaction: {elapsed:5.2f} s = {args.entries / elapsed:,.0f} entries/s")
        print(f"budget   10 % of a {args.entries:,}-certificate batch at 5,000/s = {args.entries / 5000 * 0.1:.2f} s")


if __name__ == "__main__":
    main()
