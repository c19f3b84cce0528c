#!/usr/bin/env bash
# The smki demo: the SMKI life cycle on SoftHSM2, from an empty machine, with every step
# printed so a newcomer can follow. Usage: bash scripts/demo.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
REPO=$(pwd)
SMKI="$REPO/.venv/bin/smki"

OUT="${1:-$REPO/demo-out/$(date -u +%Y%m%dT%H%M%SZ)}"
if [ -e "$OUT" ]; then echo "demo: $OUT already exists; give a new directory" >&2; exit 5; fi
mkdir -p "$OUT"
cd "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { printf '$ %s\n' "$*"; "$@"; }

step "1. A private SoftHSM2 store for this demo (a real HSM needs only another module path)"
run "$SMKI" hsm softhsm-conf hsm
export SOFTHSM2_CONF="$OUT/hsm/softhsm2.conf"
# PINs live only in environment variables whose names we pass: never on a command line.
export DEMO_SO_PIN=$(openssl rand -hex 12) DEMO_PIN=$(openssl rand -hex 12)
echo "PINs: random, in \$DEMO_SO_PIN and \$DEMO_PIN (smki reads them with --pin-source env:NAME)"

step "2. One configuration file per authority: its token, key, PIN source, state, policy and audit key, written once"
echo "(every command takes --config FILE, or \$SMKI_CONFIG; an option on the command line overrides the file."
echo " A file names where a PIN comes from, never the PIN: smki refuses a file with a PIN in it)"
for authority in issuing-oca issuing-dca; do
  token=$(echo "SMKI-$authority" | tr a-z A-Z)
  policy=organisation; [ "$authority" = issuing-dca ] && policy=device
  cat > "$authority.yaml" <<CONFIG
# smki configuration: the ${authority} (smki config template ${authority} prints a commented one)
kind: $authority
authority: $authority
hsm:
  token: $token
  key: {label: $authority, id: "01"}
  pin_source: env:DEMO_PIN
state: state/$authority
policy: builtin:$policy
environment: test
audit:
  token: $token
  key: {label: $authority-audit, id: "02"}
  pin_source: env:DEMO_PIN
defaults:
  actor: demo-operator
  workers: 2
CONFIG
done
cat > librarian.yaml <<CONFIG
# smki configuration: the Certificate Librarian
kind: librarian
database: repository.db
audit:
  key_uri: "pkcs11:token=SMKI-LIBRARIAN-AUDIT;object=librarian-audit;id=%01"
  pin_source: env:DEMO_PIN
defaults:
  actor: demo-librarian
CONFIG
run cat issuing-oca.yaml
run "$SMKI" config show --config issuing-oca.yaml

step "2b. The authorities' tokens, and a P-256 key generated inside each"
echo "(the roots' tokens come in step 4: their PINs exist only as custodians' shares)"
echo "Each authority keeps its state (issued certificates, audit trail) in state/<authority>/smki.db; the Issuing"
echo "Authorities also hold an audit key beside their CA key: each operation ends with a checkpoint signed by it."
audit_uri() { echo "pkcs11:token=$(echo "SMKI-$1" | tr a-z A-Z);object=$1-audit;id=%02"; }
for authority in issuing-oca issuing-dca; do
  run "$SMKI" hsm init-token --label "$(echo "SMKI-$authority" | tr a-z A-Z)" --so-pin-source env:DEMO_SO_PIN --pin-source env:DEMO_PIN
  # The audit key first (it checkpoints its own generation), then the CA key the file names (checkpointed by the audit key).
  run "$SMKI" hsm keygen --config "$authority.yaml" --key-label "$authority-audit" --key-id 02
  run "$SMKI" hsm keygen --config "$authority.yaml"
done
# The Librarian's audit key, on a token of its own: it signs the checkpoint of its own generation.
run "$SMKI" hsm init-token --label SMKI-LIBRARIAN-AUDIT --so-pin-source env:DEMO_SO_PIN --pin-source env:DEMO_PIN
run "$SMKI" hsm keygen --token SMKI-LIBRARIAN-AUDIT --key-label librarian-audit --key-id 01 --pin-source env:DEMO_PIN \
  --state state/librarian-audit --audit-key-uri "pkcs11:token=SMKI-LIBRARIAN-AUDIT;object=librarian-audit;id=%01" --audit-pin-source env:DEMO_PIN
run "$SMKI" hsm list --config issuing-oca.yaml

step "3. Each Issuing Authority adopts its Certificate Policy: every OID, name and validity comes from it"
run "$SMKI" policy check builtin:organisation builtin:device
run "$SMKI" policy show builtin:device --environment test
run "$SMKI" policy adopt --config issuing-oca.yaml   # the policy its file names
run "$SMKI" policy adopt --config issuing-dca.yaml

step "4. Root key ceremonies, from the shipped ceremony files (ceremonies/*.yaml), offline"
echo "Five custodians hold each root; the policy says 3 of 5 must be present to use a root key. Each chooses a"
echo "passphrase for their share (here from environment variables the demo sets; at a real ceremony, typed at a prompt)."
run "$SMKI" ceremony examples ceremonies
CUSTODIANS="alice bob carol dave erin"
PASSPHRASES=""
for custodian in $CUSTODIANS; do
  export "CUSTODIAN_PASS_$custodian=$(openssl rand -hex 12)"
  PASSPHRASES="$PASSPHRASES --passphrase-source $custodian=env:CUSTODIAN_PASS_$custodian"
done
run "$SMKI" ceremony check ceremonies/root-oca.yaml
run "$SMKI" ceremony run ceremonies/root-oca.yaml --operator demo-operator $PASSPHRASES
echo "(the Root DCA's token is one an HSM vendor's tool initialised, as a real HSM's would be: here made by"
echo " smki hsm init-token with a 'vendor' PIN. Its ceremony file says setup: take-over: the ceremony logs in"
echo " once with the vendor's PIN, sets a new random PIN (C_SetPIN) and splits it among the custodians)"
export DEMO_VENDOR_PIN=$(openssl rand -hex 12)
run "$SMKI" hsm init-token --label SMKI-ROOT-DCA --so-pin-source env:DEMO_SO_PIN --pin-source env:DEMO_VENDOR_PIN
sed -i 's/^  token: SMKI-ROOT-DCA$/  token: SMKI-ROOT-DCA\n  setup: take-over/' ceremonies/root-dca.yaml
run grep -A1 "token: SMKI-ROOT-DCA" ceremonies/root-dca.yaml
run "$SMKI" ceremony run ceremonies/root-dca.yaml --operator demo-operator --vendor-pin-source env:DEMO_VENDOR_PIN $PASSPHRASES
echo "(the vendor's PIN no longer opens the Root DCA's token: only 3 of the 5 custodians' shares do)"
"$SMKI" hsm list --token SMKI-ROOT-DCA --pin-source env:DEMO_VENDOR_PIN || true
run cat transcripts/root-oca-key.txt
run ls shares/root-oca
echo "(running a ceremony again is refused: its outputs exist, and nothing is touched)"
"$SMKI" ceremony run ceremonies/root-oca.yaml $PASSPHRASES || true

step "5. Issuing Authority ceremonies: each root certifies a key generated in the Issuing Authority's own token"
mkdir -p requests
run "$SMKI" hsm pubkey --config issuing-oca.yaml --out requests/issuing-oca.pub.pem
run "$SMKI" hsm pubkey --config issuing-dca.yaml --out requests/issuing-dca.pub.pem
run "$SMKI" ceremony run ceremonies/issuing-oca.yaml --operator demo-operator $PASSPHRASES
run "$SMKI" ceremony run ceremonies/issuing-dca.yaml --operator demo-operator $PASSPHRASES
echo "(two custodians are not enough: the key stays unused)"
sed -e 's/present: \[alice, carol, erin\]/present: [alice, carol]/' -e 's/issuing-oca-certificate/issuing-oca-short/' -e 's|out/issuing-oca.pem|out/issuing-oca-short.pem|' \
  ceremonies/issuing-oca.yaml > ceremonies/issuing-oca-short.yaml
"$SMKI" ceremony run ceremonies/issuing-oca-short.yaml $PASSPHRASES || true
cp out/root-oca.pem out/root-dca.pem out/issuing-oca.pem out/issuing-dca.pem .
echo "(each Issuing Authority's file now names its certificate, made by its ceremony)"
for authority in issuing-oca issuing-dca; do echo "issuer_certificate: $authority.pem" >> "$authority.yaml"; done
run "$SMKI" ceremony run ceremonies/arl-oca.yaml --operator demo-operator $PASSPHRASES
run openssl crl -in out/root-oca-arl-1.pem -noout -text

step "6. Subscribers make their own keys (here with openssl); the Issuing Authorities certify them under the policy"
run openssl ecparam -name prime256v1 -genkey -noout -out supplier-ds.key
run openssl ec -in supplier-ds.key -pubout -out supplier-ds.pub.pem
run "$SMKI" cert organisation --config issuing-oca.yaml --public-key supplier-ds.pub.pem \
  --role supplier --entity-id 90-B3-D5-1F-30-01-00-00 --usage DS --common-name DEMOSUPPLIER --out org-supplier-ds.pem
echo "(the policy refuses what it forbids: a network operator may not request a supplier's certificate)"
"$SMKI" cert organisation --config issuing-oca.yaml --public-key supplier-ds.pub.pem \
  --requester networkOperator --role supplier --entity-id 90-B3-D5-1F-30-01-00-00 --usage KA --out refused.pem || true
run openssl ecparam -name prime256v1 -genkey -noout -out device-ka.key
run openssl ec -in device-ka.key -pubout -out device-ka.pub.pem
run "$SMKI" cert device --config issuing-dca.yaml --public-key device-ka.pub.pem \
  --requester supplier --device-id 00-DB-12-34-56-78-90-A0 --device-type ESME --usage KA --out device-ka.pem

step "6b. The daily work: certificates from PKCS#10 requests, a revocation, the Organisation CRL"
echo "(a supplier's tool makes a key-agreement CSR: OU=02, uniqueIdentifier = its EUI-64 as a BIT STRING, keyUsage requested)"
"$REPO/.venv/bin/python" - <<'PY'
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "02", _ASN1Type.UTF8String),
                     x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, bytes.fromhex("0090B3D51F30010000"), _ASN1Type.BitString)])
usage = x509.KeyUsage(False, False, False, False, True, False, False, False, False)
csr = x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(usage, critical=True).sign(key, hashes.SHA256())
open("supplier-ka.csr", "wb").write(csr.public_bytes(serialization.Encoding.PEM))
PY
echo "(what the command takes from the file, and from where: FILE:LINE, command line or default)"
run "$SMKI" config show --config issuing-oca.yaml ca issue-org --requester supplier --out org-supplier-ka.pem supplier-ka.csr
echo "(a dry run first: every check, the lint of the exact certificate included; nothing signed, recorded or written)"
run "$SMKI" ca issue-org --config issuing-oca.yaml --requester supplier --out org-supplier-ka.pem --dry-run supplier-ka.csr
run "$SMKI" ca issue-org --config issuing-oca.yaml --requester supplier --out org-supplier-ka.pem supplier-ka.csr
SERIAL=$(openssl x509 -in org-supplier-ka.pem -noout -serial | cut -d= -f2)
run "$SMKI" ca revoke --config issuing-oca.yaml "$SERIAL" --reason keyCompromise
run "$SMKI" ca crl --config issuing-oca.yaml --out organisation-crl-1.pem
run openssl crl -in organisation-crl-1.pem -noout -text
run "$SMKI" lint organisation-crl-1.pem
echo "(the revoked certificate now fails path validation; openssl agrees)"
"$SMKI" verify org-supplier-ka.pem --anchor root-oca.pem --intermediate issuing-oca.pem --crl organisation-crl-1.pem || true
cat root-oca.pem issuing-oca.pem > oca-chain.pem
openssl verify -crl_check -CAfile oca-chain.pem -CRLfile organisation-crl-1.pem org-supplier-ka.pem || true
run "$SMKI" ca list --config issuing-oca.yaml
echo "(before it signs a CRL or records a revocation, an authority checks its state tables against what its audit trail"
echo " records; an edited table is refused. Here a copy of the state loses its revocation, as a careless or hostile edit would:)"
run "$SMKI" ca reconcile --config issuing-oca.yaml
mkdir -p tampered
"$REPO/.venv/bin/python" - <<'PY'
import sqlite3
copy = sqlite3.connect("tampered/smki.db")
sqlite3.connect("state/issuing-oca/smki.db").backup(copy)  # the whole store, its write-ahead log included
copy.execute("DELETE FROM revocations")
copy.commit()
PY
echo '$ smki ca crl --config issuing-oca.yaml --state tampered --out tampered-crl.pem   (the copy whose revocation was deleted)'
"$SMKI" ca crl --config issuing-oca.yaml --state tampered --out tampered-crl.pem || true
rm -r tampered

step "6c. Organisation Certificates for several roles, each requested by its own party, from CSRs"
"$REPO/.venv/bin/python" - <<'PY'
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
for role, code, eui, ds in (("networkOperator", "03", "90B3D51F30020000", True), ("accessControlBroker", "04", "90B3D51F30040000", False),
                            ("wanProvider", "06", "90B3D51F30060000", True), ("other", "7F", "90B3D51F307F0000", True)):
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, code, _ASN1Type.UTF8String),
                         x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, bytes.fromhex("00" + eui), _ASN1Type.BitString)])
    usage = x509.KeyUsage(ds, False, False, False, not ds, False, False, False, False)
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(usage, critical=True).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    open(f"{role}.csr", "wb").write(csr.public_bytes(serialization.Encoding.PEM))
PY
for role in networkOperator accessControlBroker wanProvider other; do
  run "$SMKI" ca issue-org --config issuing-oca.yaml --requester "$role" --out "org-$role.pem" "$role.csr"
done
echo "(the 'other' party rejects its certificate on receipt: the policy revokes a rejected certificate at once)"
run "$SMKI" ca reject --config issuing-oca.yaml "$(openssl x509 -in org-other.pem -noout -serial | cut -d= -f2)"
run "$SMKI" ca crl --config issuing-oca.yaml --out organisation-crl-2.pem

step "6d. A night's batch: 3,000 device CSRs from a manufacturer (a ZIP of .csr files), issued at HSM speed"
echo "(the batch also holds three bad requests: a broken signature, one that is not a PKCS#10 request, and a duplicate;"
echo " each gets its own answer)"
"$REPO/.venv/bin/python" - <<'PY'
import base64, zipfile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from smki.identifiers import EUI64
from smki.profiles.extensions import hardware_module_name
def csr(index, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([hardware_module_name("1.2.826.0.1.8641679.1.2.2.1", EUI64(bytes.fromhex(f"00DB{index:012X}")))])
    usage = x509.KeyUsage(index % 2 == 0, False, False, False, index % 2 == 1, False, False, False, False)
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(usage, critical=True) \
        .add_extension(san, critical=True).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
with zipfile.ZipFile("devices.zip", "w", zipfile.ZIP_DEFLATED) as batch:
    requests = {f"esme-{i:05d}.csr": csr(0x100000 + i) for i in range(3000)}
    der = bytearray(base64.b64decode(b"".join(requests["esme-00007.csr"].splitlines()[1:-1])))
    der[-1] ^= 1
    requests["broken-signature.csr"] = bytes(der)
    requests["duplicate-of-00001.csr"] = requests["esme-00001.csr"]
    requests["not-a-request.csr"] = b"-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"
    for name, data in requests.items():
        batch.writestr(name, data)
PY
echo "(smki -v logs what the batch does, on stderr)"
run "$SMKI" -v ca issue-batch --config issuing-dca.yaml --requester supplier --device-type ESME \
  --response devices-response.zip --status devices-status.csv devices.zip
run head -3 devices-status.csv
grep -v ',success,' devices-status.csv
echo "(running the same batch again, as after a crash, answers nothing twice: every request already has its answer)"
run "$SMKI" ca issue-batch --config issuing-dca.yaml --requester supplier --device-type ESME \
  --response devices-response-again.zip --status devices-status-again.csv --json devices.zip
unzip -p devices-response.zip esme-00000.crt > device-batch-0.pem
run openssl verify -CAfile root-dca.pem -untrusted issuing-dca.pem device-batch-0.pem

step "7. Independent check: openssl verifies both chains; smki lints and verifies them too"
run openssl verify -CAfile root-oca.pem -untrusted issuing-oca.pem org-supplier-ds.pem
run openssl verify -CAfile root-dca.pem -untrusted issuing-dca.pem device-ka.pem
run openssl x509 -in device-ka.pem -noout -text
echo "smki's own conformance check: every rule of smki-profiles.md, plus pkilint's RFC 5280 validators,"
echo "and path validation by key identifier to the roots"
run "$SMKI" lint --environment test --rfc5280 root-oca.pem root-dca.pem issuing-oca.pem issuing-dca.pem org-supplier-ds.pem device-ka.pem
run "$SMKI" verify org-supplier-ds.pem --anchor root-oca.pem --intermediate issuing-oca.pem --environment test
run "$SMKI" verify device-ka.pem --anchor root-dca.pem --intermediate issuing-dca.pem --environment test

step "8. The Certificate Librarian lodges every certificate: each must chain by AKI -> SKI to one it holds"
AUDIT_KEY='pkcs11:token=SMKI-LIBRARIAN-AUDIT;object=librarian-audit;id=%01'
run "$SMKI" librarian lodge --config librarian.yaml --trust-root root-oca.pem root-dca.pem
run "$SMKI" librarian lodge --config librarian.yaml \
  issuing-oca.pem issuing-dca.pem org-supplier-ds.pem device-ka.pem
echo "(lodging the same certificate twice lodges nothing: it is reported \"already lodged\", exit 0, and audited as a refusal:)"
"$SMKI" librarian lodge --config librarian.yaml device-ka.pem || true
run "$SMKI" librarian find --config librarian.yaml --eui64 90-B3-D5-1F-30-01-00-00
echo "(the Organisation CRL and the Root OCA's ARL are lodged too: each chains to its issuer, lints clean, has a higher"
echo " cRLNumber than the last and a nextUpdate in the future; then the repository is published atomically as static files)"
run "$SMKI" librarian lodge-crl --config librarian.yaml \
  organisation-crl-1.pem organisation-crl-2.pem out/root-oca-arl-1.pem --publish repository-www
echo "(repeating the whole run, as after a crash, lodges nothing twice: each list is reported \"already lodged\", exit 0;"
echo " the published CRL stays the newest)"
run "$SMKI" librarian lodge-crl --config librarian.yaml \
  organisation-crl-1.pem organisation-crl-2.pem out/root-oca-arl-1.pem --publish repository-www
run find repository-www -maxdepth 2 -name '*.crl' -o -maxdepth 1 -name index.json
run "$SMKI" librarian bulk --config librarian.yaml --out bulk
run ls bulk

step "9. The SMKI Repository web service on loopback, queried like a party would (XML over HTTP, apikey)"
export DEMO_API_KEY=$(openssl rand -hex 16)
PORT=$("$REPO/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SMKI" librarian serve --config librarian.yaml --port "$PORT" --api-key-source env:DEMO_API_KEY --published repository-www &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
SEARCH='<CertificateSearchRequest><CertificateSubjectAltName>00-DB-12-34-56-78-90-A0</CertificateSubjectAltName></CertificateSearchRequest>'
printf '$ POST /services/certificatesearch  %s\n' "$SEARCH"
"$REPO/.venv/bin/python" - "$PORT" "$SEARCH" <<'PY'
import os, sys, urllib.request
port, body = sys.argv[1], sys.argv[2].encode()
request = urllib.request.Request(f"http://127.0.0.1:{port}/services/certificatesearch?apikey={os.environ['DEMO_API_KEY']}", body, {"Content-Type": "application/xml"})
print(urllib.request.urlopen(request).read().decode())
PY
OCA_SKI=$(openssl x509 -in issuing-oca.pem -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' :')
printf '$ GET /crl/%s.crl?apikey=...\n' "$OCA_SKI"
"$REPO/.venv/bin/python" -c 'import sys, urllib.request; open("downloaded-organisation.crl", "wb").write(urllib.request.urlopen(sys.argv[1]).read())' \
  "http://127.0.0.1:$PORT/crl/$OCA_SKI.crl?apikey=$DEMO_API_KEY"
run openssl crl -inform DER -in downloaded-organisation.crl -noout -crlnumber -issuer
kill $SERVER; wait $SERVER 2>/dev/null || true

step "9b. smki serve: the SMKI's online interfaces over mutual TLS (CSR web services, Organisation CSRs, the Repository, the portal)"
echo "(a lab's Issuing DCA relaxes the SEC's usage rules (SEC Appendix N 3: batches only 20:00-08:00, one ad hoc CSR"
echo " per 0.8 s): batches at any hour, no interval; the Registration Authority still approves each batch)"
"$REPO/.venv/bin/python" - <<'PY' > lab-device.yaml
from smki.testing.service import lab_policy_text
print(lab_policy_text("device").replace('auto_approved_requesters: ["*"]', "auto_approved_requesters: []"), end="")
PY
run "$SMKI" policy adopt --state state/issuing-dca --actor demo-operator --audit-key-uri "pkcs11:token=SMKI-ISSUING-DCA;object=issuing-dca-audit;id=%02" \
  --audit-pin-source env:DEMO_PIN lab-device.yaml
sed -i 's|^policy: builtin:device$|policy: lab-device.yaml|' issuing-dca.yaml
echo "(lab transport credentials, as the IKI would issue them: a LAB ONLY CA, the server's certificate, one client per role)"
run "$SMKI" tls lab-credentials tls --register --database service.db
SPORT=$("$REPO/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > service.yaml <<CONFIG
# smki serve's configuration (smki config template service prints a commented one)
kind: service
listen: {address: 127.0.0.1, port: $SPORT}
workers: 2
tls: {certificate: tls/server.pem, key: tls/server.key.pem, client_ca: tls/lab-transport-ca.pem}
database: service.db                  # the subscriber register, portal accounts and the request audit trail
issuing_oca: issuing-oca.yaml
issuing_dca: issuing-dca.yaml
librarian: librarian.yaml
repository: {api_key_source: env:DEMO_API_KEY, published: repository-www}
batches: {processor: true, poll_seconds: 1}
access_log: service-access.log
CONFIG
run "$SMKI" subscribers list --config service.yaml
export DEMO_PORTAL_PASSWORD=$(openssl rand -hex 12)
run "$SMKI" portal users add jo --subscriber lab-supplier --config service.yaml --password-source env:DEMO_PORTAL_PASSWORD
"$SMKI" serve --config service.yaml --json > serve.json 2> serve.log &
SERVICE=$!
trap 'kill $SERVICE 2>/dev/null || true' EXIT
for _ in $(seq 300); do [ -s serve.json ] && break; sleep 0.2; done
URL=$("$REPO/.venv/bin/python" -c 'import json; print(json.load(open("serve.json"))["url"])')
echo "serving on $URL (2 workers and a batch processor; the portal: $URL/portal/)"
CURL=(curl -sS --fail-with-body --cacert tls/lab-transport-ca.pem --cert tls/client-supplier.pem --key tls/client-supplier.key.pem
      -H "Content-Type: application/xml;charset=UTF-8")
run curl -sS --cacert tls/lab-transport-ca.pem "$URL/health"; echo
echo "(no client certificate: refused, and audited)"
curl -sS --cacert tls/lab-transport-ca.pem -o /dev/null -w 'HTTP %{http_code}\n' -X POST "$URL/1.0/AdHocDeviceCSR" --data '<x/>'
"$REPO/.venv/bin/python" - <<'PY'
import base64
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from smki.identifiers import EUI64
from smki.profiles.extensions import hardware_module_name
def csr(device, ds=True):
    san = x509.SubjectAlternativeName([hardware_module_name("1.2.826.0.1.8641679.1.2.2.1", EUI64(bytes.fromhex(device)))])
    usage = x509.KeyUsage(ds, False, False, False, not ds, False, False, False, False)
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(usage, critical=True) \
        .add_extension(san, critical=True).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode()
# ad hoc: a replacement key for a meter the night's batch certified (an ad hoc request replaces, policy 4.2)
open("adhoc.xml", "w").write('<DeviceCertificateSigningRequest ID="demo-adhoc-1"><Version>1.0</Version>'
                             f'<CertificateSigningRequest>{csr("00DB000000100002")}</CertificateSigningRequest></DeviceCertificateSigningRequest>')
entries = "".join(f'<DeviceCSR ID="gsme-{n}">{csr(f"00DB0000002{n:05X}", n % 2 == 0)}</DeviceCSR>' for n in range(20))
open("batch.xml", "w").write(f'<SubmitCSRBatch ID="demo-batch-1"><Version>1.0</Version>{entries}</SubmitCSRBatch>')
PY
echo '$ curl --cert tls/client-supplier.pem ... -X POST $URL/1.0/AdHocDeviceCSR --data @adhoc.xml'
"${CURL[@]}" -X POST "$URL/1.0/AdHocDeviceCSR" --data @adhoc.xml > adhoc-response.xml
"$REPO/.venv/bin/python" -c 'import sys, xml.etree.ElementTree as ET; r = ET.parse("adhoc-response.xml").getroot(); print("Status", r.findtext("Status"), "TransactionId", r.findtext("TransactionId")); open("adhoc.der", "wb").write(__import__("base64").b64decode(r.findtext("Certificate")))'
run openssl verify -CAfile root-dca.pem -untrusted issuing-dca.pem <(openssl x509 -inform DER -in adhoc.der)
echo '$ curl ... -X POST $URL/1.0/OrganisationCSR?ID=demo-org-1 --data-binary @supplier-ds.csr   (any portal encoding: here PEM)'
"$REPO/.venv/bin/python" - <<'PY'
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "02", _ASN1Type.UTF8String),
                     x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, bytes.fromhex("0000005EEF10000002"), _ASN1Type.BitString)])
usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)  # lab-supplier's own EUI-64: online, a party asks only for its own
csr = x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(usage, critical=True).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
open("supplier-ds.csr", "wb").write(csr.public_bytes(serialization.Encoding.PEM))
PY
"${CURL[@]}" -X POST "$URL/1.0/OrganisationCSR?ID=demo-org-1" --data-binary @supplier-ds.csr > org-response.xml
"$REPO/.venv/bin/python" -c 'import xml.etree.ElementTree as ET; r = ET.parse("org-response.xml").getroot(); print("Status", r.findtext("Status"))'
echo '$ curl ... -X POST $URL/1.0/PortalCSRBatch/SubmitCSRBatch --data @batch.xml   (20 device CSRs)'
"${CURL[@]}" -X POST "$URL/1.0/PortalCSRBatch/SubmitCSRBatch" --data @batch.xml > batch-status.xml
cat batch-status.xml; echo
BATCH=$("$REPO/.venv/bin/python" -c 'import xml.etree.ElementTree as ET; print(ET.parse("batch-status.xml").getroot().findtext("BatchId"))')
echo "(PENDING: the Registration Authority approves it, from the CLI; the service's batch processor takes it from there)"
run "$SMKI" ca batches list --config issuing-dca.yaml
run "$SMKI" ca batches approve --config issuing-dca.yaml "$BATCH"
for _ in $(seq 120); do
  "${CURL[@]}" "$URL/1.0/PortalCSRBatch/CSRBatchResult?BatchId=$BATCH" > batch-result.xml
  grep -q '<BatchStatus>COMPLETED</BatchStatus>' batch-result.xml && break; sleep 0.5
done
"$REPO/.venv/bin/python" -c 'import collections, xml.etree.ElementTree as ET; r = ET.parse("batch-result.xml").getroot(); print("BatchStatus", r.findtext("BatchStatus"), dict(collections.Counter(e.findtext("Status") for e in r.iter("DeviceCertificate"))))'
echo '$ curl ... $URL/1.0/PortalCSRBatch/BatchResponseZip?BatchId=N   (the portal batch format: a .crt per request)'
"${CURL[@]}" -o batch-response.zip "$URL/1.0/PortalCSRBatch/BatchResponseZip?BatchId=$BATCH"
run unzip -l batch-response.zip
echo "(the repository on the same service: the API key as a header; CRLs need none)"
"${CURL[@]}" -H "X-API-Key: $DEMO_API_KEY" -X POST "$URL/services/certificatesearch" \
  --data '<CertificateSearchRequest><CertificateSubjectAltName>00-DB-12-34-56-78-90-A0</CertificateSubjectAltName></CertificateSearchRequest>'; echo
run curl -sS --cacert tls/lab-transport-ca.pem -o service-organisation.crl "$URL/crl/$OCA_SKI.crl"
run openssl crl -inform DER -in service-organisation.crl -noout -crlnumber
run curl -sS --cacert tls/lab-transport-ca.pem "$URL/metrics" -o metrics.txt
grep -m3 '^smki_' metrics.txt || true
echo "(every request was audited in the service's own trail: who, what, the outcome; the access log holds no key)"
echo '$ smki audit show --db service.db --operation service.request | tail -4'
"$SMKI" audit show --db service.db --operation service.request | tail -4
run "$SMKI" audit verify --db service.db
echo "The portal: $URL/portal/ (a browser presenting tls/client-supplier.pem, or user jo with \$DEMO_PORTAL_PASSWORD)"
kill $SERVICE; wait $SERVICE 2>/dev/null || true

step "10. An auditor checks the trail: every entry hash-chained, every checkpoint signed by the audit key in the HSM"
run "$SMKI" hsm pubkey --key-uri "$AUDIT_KEY" --out librarian-audit.pub.pem
run "$SMKI" audit show --config librarian.yaml
run "$SMKI" audit export --config librarian.yaml --out audit-trail.json
run "$SMKI" audit verify --export audit-trail.json --public-key librarian-audit.pub.pem
echo "(the auditor keeps the head it verified, outside the database: a tail removed later, checkpoints and all, is caught against it)"
REPOSITORY_HEAD=$("$SMKI" audit verify --export audit-trail.json --public-key librarian-audit.pub.pem --json \
  | "$REPO/.venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["head"])')
echo "recorded head: $REPOSITORY_HEAD"

step "11. Root drills from the shipped files: a root re-key with a cross-certificate, and contingency key recovery"
run "$SMKI" ceremony run ceremonies/root-oca-rekey.yaml --operator demo-operator $PASSPHRASES
run openssl verify -CAfile root-oca.pem out/root-oca-2-cross.pem
echo "(recovery releases the contingency wrapping key under 3 of 5 custodians; in earnest only after a root compromise)"
run "$SMKI" ceremony run ceremonies/contingency-recovery-oca.yaml --operator demo-operator $PASSPHRASES
"$REPO/.venv/bin/python" - <<'PY'
import json
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from smki.hsm.contingency import unwrap_public_key
from smki.profiles.extensions import WrappedApexContingencyKey
package = json.load(open("out/root-oca-contingency-recovery.json"))
root = x509.load_pem_x509_certificate(open("root-oca.pem", "rb").read())
extension = root.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.20")).value
key = unwrap_public_key(bytes.fromhex(package["wrapping_key_hex"]), WrappedApexContingencyKey.load(extension.value)["wrappedContinPubKey"].native)
same = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode() == package["contingency_public_key_pem"]
print("the Root OCA certificate's wrapped contingency key unwraps to the recovered public key:", same)
assert same
PY

step "12. The same SMKI from Python: the demo's own Issuing OCA as an smki.IssuingAuthority, and a test PKI in one call"
echo "(the CLI is a thin shell over these objects: the library applies the same policy, records and audit entries)"
"$REPO/.venv/bin/python" - <<'PY'
from pathlib import Path
import smki
from smki.hsm.config import parse_pkcs11_uri
from smki.testing.csr import organisation_csr
from cryptography.hazmat.primitives.asymmetric import ec

with smki.IssuingAuthority("state/issuing-oca", certificate=Path("issuing-oca.pem"),
                           key=parse_pkcs11_uri("pkcs11:token=SMKI-ISSUING-OCA;object=issuing-oca;id=%01"),
                           pin=smki.PinSource.parse("env:DEMO_PIN"), policy="builtin:organisation",
                           environment="test", actor="demo-python",
                           audit_key=parse_pkcs11_uri("pkcs11:token=SMKI-ISSUING-OCA;object=issuing-oca-audit;id=%02"),
                           audit_pin=smki.PinSource.parse("env:DEMO_PIN")) as oca:
    request = organisation_csr(ec.generate_private_key(ec.SECP256R1()), usage="digital_signature", role="02", eui64="90B3D51F30010099")
    issued = oca.issue_organisation(request, requester="supplier", out=Path("org-from-python.pem"))
    print(f"issued {issued.serial_hex} to {issued.certificate.subject.rfc4514_string()} under policy {issued.policy_identity['version']}")
    try:
        oca.issue_organisation(request, requester="networkOperator")
    except smki.SmkiError as refusal:
        print(f"refused, as the CLI refuses it (exit {refusal.exit_code}): {refusal}")
    print("the state agrees with the audit trail:", oca.reconcile().agree)
PY
echo "(and a complete test PKI for a party's integration tests, on a private SoftHSM token: the README's example, as it stands)"
env -u SOFTHSM2_CONF "$REPO/.venv/bin/python" -c "$(awk '/^## Using smki from Python/{f=1} f&&/^```python/{p=1;next} p&&/^```/{exit} p' "$REPO/README.md")" \
  && echo "README example: a test PKI, a device certificate, a revocation, a CRL and two verifications, all as expected"

step "13. The auditor verifies every trail the demo left, each against its own audit key"
echo "(a root's audit key lives in the root's token beside the root key; its public key is in the key ceremony's"
echo " transcript, which the witnesses signed: that is where the auditor takes it from)"
for root in root-oca root-dca; do
  "$REPO/.venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["facts"]["audit_key"]["public_key_pem"], end="")' \
    "transcripts/$root-key.json" > "state/$root/audit.pub.pem"
  run "$SMKI" audit verify --db "state/$root/smki.db" --public-key "state/$root/audit.pub.pem"
done
run "$SMKI" audit verify --db repository.db --public-key librarian-audit.pub.pem --expect-head "$REPOSITORY_HEAD"
run "$SMKI" audit verify --db state/librarian-audit/smki.db --public-key librarian-audit.pub.pem   # the key's own generation
echo "(an Issuing Authority's token also anchors the last head it checkpointed: a trail cut back and its state rolled"
echo " back to match would still verify on its own, but not against the anchor, and the authority refuses to act on it)"
for authority in issuing-oca issuing-dca; do   # key generation and issuance: each Issuing Authority's own trail
  run "$SMKI" hsm pubkey --key-uri "$(audit_uri "$authority")" --out "state/$authority/audit.pub.pem"
  # The file's audit key is the anchor key here, and its PIN source the one --pin-source takes.
  run "$SMKI" audit verify --config "$authority.yaml" --db "state/$authority/smki.db" --public-key "state/$authority/audit.pub.pem"
done

step "Done. Everything is in $OUT"
