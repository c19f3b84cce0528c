"""The main paths on a second PKCS#11 implementation: NSS softokn through p11-kit-proxy (tests/nss_softokn.py).

Key generation, root and Issuing Authority certificates, an Organisation Certificate, a CRL, a batch of
Device Certificates, and a root-key ceremony that takes over the NSS token the way a vendor-initialised
HSM token is taken over. softokn reports CKA_LOCAL=False for the keys it generates, so these tests
give smki a policy that says so (local: false): the policy decides what a key must read back as,
and with the shipped policy (local: true) the key is refused, which is tested too.
"""

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import csr_factory as f
import nss_softokn
from conftest import openssl
from test_ceremony import PASSPHRASES, SOURCES, workspace

pytestmark = pytest.mark.skipif(nss_softokn.missing() is not None, reason=nss_softokn.missing() or "")

REPO = Path(__file__).resolve().parents[1]
SHIPPED_POLICIES = REPO / "smki" / "data" / "policies"
PIN = ["--pin-source", "env:NSS_VENDOR_PIN"]
TOKEN = ["--token", nss_softokn.TOKEN]


def nss_policy(directory: Path, name: str) -> Path:
    """The shipped policy, except that it accepts keys softokn generated (CKA_LOCAL=False)."""
    text = (SHIPPED_POLICIES / f"{name}.yaml").read_text()
    changed = text.replace("local: true", "local: false")
    assert changed != text
    (directory / f"{name}.yaml").write_text(changed)
    return directory / f"{name}.yaml"


@pytest.fixture(scope="module")
def nss(tmp_path_factory):
    """One NSS database holding the roots' and Issuing Authorities' keys, and their certificates."""
    d = tmp_path_factory.mktemp("nss")
    token = nss_softokn.NssToken.create(d / "token", "nss-vendor-pin-1")
    policies = {name: nss_policy(d, name) for name in ("organisation", "device")}
    keys = {}
    for index, name in enumerate(("root-o", "issuing-o", "root-d", "issuing-d"), start=1):
        hierarchy = "organisation" if name.endswith("-o") else "device"
        key = [*TOKEN, "--key-label", name, "--key-id", f"0{index}"]
        token.smki("policy", "adopt", str(policies[hierarchy]), "--state", str(d / name))
        generated = json.loads(token.smki("hsm", "keygen", *key, *PIN, "--state", str(d / name), "--policy", str(policies[hierarchy]),
                                          "--json").stdout)
        assert generated["attributes"]["local"] is False and generated["attributes"]["sensitive"] is True
        keys[name] = [*key, *PIN]
    for hierarchy, suffix in (("organisation", "o"), ("device", "d")):
        policy = ["--policy", str(policies[hierarchy]), "--environment", "test", "--not-before", "2026-01-01"]
        root, issuing = f"root-{suffix}", f"issuing-{suffix}"
        token.smki("cert", "root", *keys[root], "--state", str(d / root), *policy, "--out", str(d / f"{root}.pem"))
        token.smki("hsm", "pubkey", *keys[issuing][:6], "--out", str(d / f"{issuing}.pub"))
        token.smki("cert", "issuing-ca", *keys[root], "--state", str(d / root), *policy, "--issuer-cert", str(d / f"{root}.pem"),
                   "--public-key", str(d / f"{issuing}.pub"), "--out", str(d / f"{issuing}.pem"))
    return d, token, keys, policies


def test_a_key_the_shipped_policy_forbids_is_refused(nss):
    d, token, _, _ = nss
    refused = token.smki("hsm", "keygen", *TOKEN, "--key-label", "strict", "--key-id", "7f", *PIN, "--state", str(d / "strict"),
                         "--policy", "builtin:organisation", check=False)
    assert refused.returncode == 4 and "local=False" in refused.stderr and "destroyed" in refused.stderr, refused.stderr
    listed = token.smki("hsm", "list", *TOKEN, *PIN, "--json").stdout
    assert "strict" not in listed and "issuing-o" in listed


def test_init_token_refuses_to_initialise_the_nss_token_again(nss):
    _, token, _, _ = nss
    refused = token.smki("hsm", "init-token", "--label", "again", "--so-pin-source", "env:NSS_VENDOR_PIN", "--pin-source", "env:NSS_VENDOR_PIN",
                         check=False)
    assert refused.returncode == 4 and "0 uninitialised tokens" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_an_organisation_certificate_and_a_crl(nss):
    d, token, keys, policies = nss
    policy = ["--policy", str(policies["organisation"])]
    state = ["--state", str(d / "issuing-o")]
    (d / "org.csr").write_bytes(f.organisation_csr(eui64="90B3D51F30020001"))
    token.smki("ca", "issue-org", *keys["issuing-o"], *state, *policy, "--environment", "test", "--issuer-cert", str(d / "issuing-o.pem"),
               "--requester", "supplier", "--not-before", "2026-02-01", "--out", str(d / "org.pem"), str(d / "org.csr"))
    verified = openssl("verify", "-x509_strict", "-attime", "1800000000", "-CAfile", str(d / "root-o.pem"), "-untrusted", str(d / "issuing-o.pem"),
                       str(d / "org.pem"))
    assert verified.returncode == 0, verified.stderr
    serial = f"{x509.load_pem_x509_certificate((d / 'org.pem').read_bytes()).serial_number:032X}"
    token.smki("ca", "revoke", *state, *policy, serial, "--reason", "keyCompromise")
    crl = json.loads(token.smki("ca", "crl", *keys["issuing-o"], *state, *policy, "--issuer-cert", str(d / "issuing-o.pem"),
                                "--out", str(d / "crl.pem"), "--json").stdout)
    assert crl["crl_number"] == 1 and crl["entries"] == 1
    checked = openssl("crl", "-in", str(d / "crl.pem"), "-CAfile", str(d / "issuing-o.pem"), "-noout", "-text")
    output = (checked.stderr + checked.stdout).decode()
    assert checked.returncode == 0 and "verify OK" in output and serial in output.replace(":", "").upper()


def test_a_batch_of_twenty_device_certificates(nss):
    d, token, keys, policies = nss
    batch = d / "batch"
    batch.mkdir()
    for i in range(20):
        (batch / f"dev{i:02d}.csr").write_bytes(f.device_csr(eui64=f"00DB12345678{i:04X}"))
    done = token.smki("ca", "issue-batch", *keys["issuing-d"], "--state", str(d / "issuing-d"), "--issuer-cert", str(d / "issuing-d.pem"),
                      "--policy", str(policies["device"]), "--environment", "test", "--requester", "supplier", "--device-type", "ESME",
                      "--not-before", "2026-02-01", "--response", str(d / "response.zip"), "--status", str(d / "status.csv"),
                      "--workers", "2", str(batch), "--json")
    assert json.loads(done.stdout)["issued"] == 20, done.stdout
    issuer = x509.load_pem_x509_certificate((d / "issuing-d.pem").read_bytes())
    with zipfile.ZipFile(d / "response.zip") as response:
        names = sorted(response.namelist())
        assert len(names) == 20
        for name in names:
            data = response.read(name)
            load = x509.load_pem_x509_certificate if data.startswith(b"-----BEGIN") else x509.load_der_x509_certificate
            load(data).verify_directly_issued_by(issuer)


def test_a_root_key_ceremony_takes_over_the_nss_token(tmp_path):
    work = workspace(tmp_path, "NSS")
    token = nss_softokn.NssToken.create(tmp_path / "root-token", "nss-vendor-pin-2")
    (work / "policies").mkdir()
    for name in ("organisation", "device"):
        nss_policy(work / "policies", name)
    for ceremony_file in (work / "ceremonies").glob("*.yaml"):  # the NSS copies of the policies (local: false), not the shipped ones
        ceremony_file.write_text(re.sub(r"(?m)^policy: builtin:(\w+)", r"policy: ../policies/\1.yaml", ceremony_file.read_text()))
    ceremony = work / "ceremonies" / "root-dca.yaml"
    text = re.sub(r"(?m)^  token: .*$", f"  token: {nss_softokn.TOKEN}\n  setup: take-over", ceremony.read_text(), count=1)
    ceremony.write_text(text)
    wrong = token.smki("ceremony", "run", str(ceremony), *SOURCES, "--vendor-pin-source", "env:WRONG", check=False,
                       env={**PASSPHRASES, "WRONG": "not-it"})
    assert wrong.returncode == 4 and "PIN incorrect" in wrong.stderr and not (work / "shares").exists(), wrong.stderr
    done = token.smki("ceremony", "run", str(ceremony), *SOURCES, "--vendor-pin-source", "env:NSS_VENDOR_PIN", "--json", env=PASSPHRASES)
    transcript = json.loads(done.stdout)
    assert transcript["hsm"]["setup"] == "take-over" and transcript["hsm"]["module"] == nss_softokn.PROXY
    assert all(key["local"] is False for key in transcript["key_attributes"])
    root = x509.load_pem_x509_certificate((work / "out" / "root-dca.pem").read_bytes())
    root.verify_directly_issued_by(root)
    assert sorted(p.name for p in (work / "shares" / "root-dca").iterdir()) == [f"{n}.share.json" for n in sorted(("alice", "bob", "carol", "dave", "erin"))]
    # The vendor's PIN no longer opens the token: the custodians' shares are now the only way in.
    refused = token.smki("hsm", "list", *TOKEN, *PIN, check=False)
    assert refused.returncode == 4 and "PIN incorrect" in refused.stderr
    # Three of the five shares open it: the root certifies an Issuing DCA's key, on the trail head anchored in the NSS token.
    (work / "requests").mkdir()
    (work / "requests" / "issuing-dca.pub.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    issuing = work / "ceremonies" / "issuing-dca.yaml"
    issuing.write_text(re.sub(r"(?m)^  token: .*$", f"  token: {nss_softokn.TOKEN}", issuing.read_text(), count=1))
    token.smki("ceremony", "run", str(issuing), *SOURCES, env=PASSPHRASES)
    x509.load_pem_x509_certificate((work / "out" / "issuing-dca.pem").read_bytes()).verify_directly_issued_by(root)
    shutil.rmtree(tmp_path / "root-token")
