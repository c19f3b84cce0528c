"""Raw SoftHSM sign rate (1 process and N spawned workers) and certificate build+sign rates.

Run: .venv/bin/python benchmarks/bench_signing.py [--count N] [--workers W]
The ceilings it prints are measured in the same run on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hsm_store import throwaway_token  # noqa: E402


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:10,.0f}/s  ({seconds * 1e6 / count:7.1f} us each)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    label, pin = throwaway_token()

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from pkcs11 import Mechanism

    from smki.hsm.config import KeyRef, default_module_path
    from smki.hsm.keys import generate_p256_key_pair, public_key_of
    from smki.hsm.pool import SigningPool
    from smki.hsm.session import open_session
    from smki.hsm.signer import Pkcs11Signer, SoftwareSigner
    from smki.identifiers import EUI64, KeyUsage
    from smki.profiles import (DEVICE_NOT_AFTER, DeviceCertificateParams, RootCertificateParams, Validity, ca_name,
                               device_certificate, root_certificate, sign_certificate)

    session = open_session(default_module_path(), label, pin, rw=True)
    public_object, private_object = generate_p256_key_pair(session, "bench-ca", b"\x01")
    hsm = Pkcs11Signer(private_object, public_key_of(public_object))
    software = SoftwareSigner()
    digests = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(args.count)]
    print(f"machine: {os.cpu_count()} cores; {args.count} operations per figure")

    start = time.perf_counter()
    prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    for digest in digests:
        software.private_key.sign(digest, prehashed)
    print(f"ceiling  OpenSSL P-256 sign, 1 core, no verify      {rate(args.count, time.perf_counter() - start)}")

    start = time.perf_counter()
    for digest in digests:
        private_object.sign(digest, mechanism=Mechanism.ECDSA)
    print(f"ceiling  SoftHSM raw CKM_ECDSA, 1 process            {rate(args.count, time.perf_counter() - start)}")

    start = time.perf_counter()
    for digest in digests:
        hsm.sign_digest(digest)
    print(f"smki     Pkcs11Signer (sign + verify), 1 process     {rate(args.count, time.perf_counter() - start)}")

    with SigningPool(KeyRef(label, "bench-ca", b"\x01"), pin, workers=args.workers) as pool:
        list(pool.sign_digests(digests[: args.workers * 256]))  # warm-up: spawn and log in
        start = time.perf_counter()
        list(pool.sign_digests(digests))
        print(f"smki     SigningPool (sign + verify), {args.workers} workers     {rate(args.count, time.perf_counter() - start)}")

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    issuer = sign_certificate(root_certificate(RootCertificateParams(ca_name([("CN", "E357")]), ("1.2.3.4",), Validity(now, now.replace(year=2050))), hsm.public_key), hsm)
    subject_keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(256)]
    builds = max(1000, args.count // 10)
    for name, signer in (("software key", software), ("SoftHSM key ", hsm)):
        ca = issuer if signer is hsm else sign_certificate(root_certificate(RootCertificateParams(ca_name([("CN", "E357")]), ("1.2.3.4",), Validity(now, now.replace(year=2050))), software.public_key), software)
        start = time.perf_counter()
        for i in range(builds):
            params = DeviceCertificateParams(EUI64(i.to_bytes(8, "big")), "1.2.826.0.1.8641679.1.2.2.1", KeyUsage.KEY_AGREEMENT,
                                             "1.2.826.0.1.1800000.1.2.1.4", Validity(now, DEVICE_NOT_AFTER))
            sign_certificate(device_certificate(params, subject_keys[i % 256], ca), signer)
        print(f"smki     device certificate build+sign, {name} {rate(builds, time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
