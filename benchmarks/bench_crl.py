"""A CRL of N revoked entries built and signed with a SoftHSM key; peak memory.

Run: .venv/bin/python benchmarks/bench_crl.py [--entries 1000000]
Compared in the same run with cryptography's own list-constructor path (the ceiling to beat).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hsm_store import throwaway_token  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--skip-cryptography", action="store_true", help="do not time cryptography's builder")
    args = parser.parse_args()
    label, pin = throwaway_token()

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from smki.hsm.config import default_module_path
    from smki.hsm.keys import generate_p256_key_pair, public_key_of
    from smki.hsm.session import open_session
    from smki.hsm.signer import Pkcs11Signer, SignerPrivateKey
    from smki.profiles import RootCertificateParams, Validity, ca_name, root_certificate, sign_certificate
    from smki.profiles.crl import RevokedEntry, build_crl

    session = open_session(default_module_path(), label, pin, rw=True)
    public_object, private_object = generate_p256_key_pair(session, "issuing-oca", b"\x01")
    signer = Pkcs11Signer(private_object, public_key_of(public_object))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    issuer = sign_certificate(root_certificate(RootCertificateParams(ca_name([("OU", "07"), ("CN", "Z1")]), ("1.2.3.4",), Validity(start, start.replace(year=2050))), signer.public_key), signer)
    serial_base = 1 << 126
    entries = [RevokedEntry(serial_base + i * 7919, start + timedelta(seconds=i % 86400), "keyCompromise" if i % 4 == 0 else None)
               for i in range(args.entries)]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    began = time.perf_counter()
    crl = build_crl(issuer, signer, crl_number=1, this_update_utc=start + timedelta(days=1),
                    next_update_utc=start + timedelta(days=2), entries=entries)
    ours = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert len(crl) == args.entries and crl.is_signature_valid(signer.public_key)
    print(f"smki     CRL of {args.entries:,} entries, built + SoftHSM-signed: {ours:6.2f} s  (target <= 3 s)")
    print(f"         peak RSS {peak_mib:,.0f} MiB (entries alone: {base_rss / 1024:,.0f} MiB; target < 1024 MiB)")

    # What an authority releases (`smki ca crl`, a root's ARL): the same list, then linted and its signature
    # checked over the DER as released (operations/lists.py), before anything is recorded or written.
    from smki.operations.lists import ListType, signed_list

    began = time.perf_counter()
    released, _ = signed_list(issuer, signer, ListType.ARL, crl_number=2, this_update_utc=start + timedelta(days=1),
                              next_update_utc=start + timedelta(days=2), entries=entries)
    checked = time.perf_counter() - began
    assert len(released) == args.entries
    print(f"smki     ... built, signed, linted and verified, as released: {checked:6.2f} s  (lint + verify {checked - ours:5.2f} s)")

    if not args.skip_cryptography:
        began = time.perf_counter()
        revoked = [x509.RevokedCertificateBuilder().serial_number(e.serial_number).revocation_date(e.revocation_date_utc).build() for e in entries]
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked).issuer_name(issuer.subject) \
            .last_update(start + timedelta(days=1)).next_update(start + timedelta(days=2)) \
            .sign(SignerPrivateKey(signer), hashes.SHA256())
        theirs = time.perf_counter() - began
        print(f"ceiling  cryptography list constructor (no reason codes): {theirs:6.2f} s  -> smki is {theirs / ours:.1f}x faster")


if __name__ == "__main__":
    main()
