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

step "2. One token per authority, as hsm-config/token-layout.yaml lays out; a P-256 key generated inside each"
echo "Each authority keeps its state (issued certificates, audit trail) in state/<authority>/smki.db, and an"
echo "audit key beside its CA key: every operation ends with a checkpoint signed by that key."
audit_uri() { echo "pkcs11:token=$(echo "SMKI-$1" | tr a-z A-Z);object=$1-audit;id=%02"; }
for authority in root-oca root-dca issuing-oca issuing-dca librarian-audit; do
  token=$(echo "SMKI-$authority" | tr a-z A-Z)
  run "$SMKI" hsm init-token --label "$token" --so-pin-source env:DEMO_SO_PIN --pin-source env:DEMO_PIN
  if [ "$authority" != librarian-audit ]; then
    run "$SMKI" hsm keygen --token "$token" --key-label "$authority-audit" --key-id 02 --pin-source env:DEMO_PIN --state "state/$authority"
  fi
  run "$SMKI" hsm keygen --token "$token" --key-label "$authority" --key-id 01 --pin-source env:DEMO_PIN --state "state/$authority" \
    $( [ "$authority" != librarian-audit ] && echo --audit-key-uri "$(audit_uri "$authority")" --audit-pin-source env:DEMO_PIN )
done
run "$SMKI" hsm list
run "$SMKI" hsm list --token SMKI-ROOT-OCA --pin-source env:DEMO_PIN

step "3. Each authority adopts its Certificate Policy: every OID, name and validity comes from it"
ORG_POLICY="--policy $REPO/policies/organisation.yaml --environment test"
DEVICE_POLICY="--policy $REPO/policies/device.yaml --environment test"
run "$SMKI" policy check "$REPO/policies/organisation.yaml" "$REPO/policies/device.yaml"
run "$SMKI" policy show "$REPO/policies/device.yaml" --environment test
for authority in root-oca issuing-oca; do run "$SMKI" policy adopt "$REPO/policies/organisation.yaml" --state "state/$authority" --audit-key-uri "$(audit_uri $authority)" --audit-pin-source env:DEMO_PIN; done
for authority in root-dca issuing-dca; do run "$SMKI" policy adopt "$REPO/policies/device.yaml" --state "state/$authority" --audit-key-uri "$(audit_uri $authority)" --audit-pin-source env:DEMO_PIN; done
sign_as() {  # the key, state and audit key of one authority
  echo --token "$(echo "SMKI-$1" | tr a-z A-Z)" --key-label "$1" --key-id 01 --pin-source env:DEMO_PIN \
       --state "state/$1" --audit-key-uri "$(audit_uri "$1")" --audit-pin-source env:DEMO_PIN
}

step "4. Root OCA and Root DCA: self-signed, keys never leave their tokens"
run "$SMKI" cert root $(sign_as root-oca) $ORG_POLICY --out root-oca.pem
run "$SMKI" cert root $(sign_as root-dca) $DEVICE_POLICY --out root-dca.pem

step "5. The roots certify the Issuing Authorities' keys (exported public keys only)"
run "$SMKI" hsm pubkey --token SMKI-ISSUING-OCA --key-label issuing-oca --key-id 01 --out issuing-oca.pub.pem
run "$SMKI" hsm pubkey --token SMKI-ISSUING-DCA --key-label issuing-dca --key-id 01 --out issuing-dca.pub.pem
run "$SMKI" cert issuing-ca $(sign_as root-oca) $ORG_POLICY --issuer-cert root-oca.pem --public-key issuing-oca.pub.pem --out issuing-oca.pem
run "$SMKI" cert issuing-ca $(sign_as root-dca) $DEVICE_POLICY --issuer-cert root-dca.pem --public-key issuing-dca.pub.pem --out issuing-dca.pem

step "6. Subscribers make their own keys (here with openssl); the Issuing Authorities certify them under the policy"
run openssl ecparam -name prime256v1 -genkey -noout -out supplier-ds.key
run openssl ec -in supplier-ds.key -pubout -out supplier-ds.pub.pem
run "$SMKI" cert organisation $(sign_as issuing-oca) $ORG_POLICY --issuer-cert issuing-oca.pem --public-key supplier-ds.pub.pem \
  --role supplier --entity-id 90-B3-D5-1F-30-01-00-00 --usage DS --common-name DEMOSUPPLIER --out org-supplier-ds.pem
echo "(the policy refuses what it forbids: a network operator may not request a supplier's certificate)"
"$SMKI" cert organisation $(sign_as issuing-oca) $ORG_POLICY --issuer-cert issuing-oca.pem --public-key supplier-ds.pub.pem \
  --requester networkOperator --role supplier --entity-id 90-B3-D5-1F-30-01-00-00 --usage KA --out refused.pem || true
run openssl ecparam -name prime256v1 -genkey -noout -out device-ka.key
run openssl ec -in device-ka.key -pubout -out device-ka.pub.pem
run "$SMKI" cert device $(sign_as issuing-dca) $DEVICE_POLICY --issuer-cert issuing-dca.pem --public-key device-ka.pub.pem \
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
run "$SMKI" ca issue-org $(sign_as issuing-oca) $ORG_POLICY --issuer-cert issuing-oca.pem --requester supplier --out org-supplier-ka.pem supplier-ka.csr
SERIAL=$(openssl x509 -in org-supplier-ka.pem -noout -serial | cut -d= -f2)
run "$SMKI" ca revoke --state state/issuing-oca --policy "$REPO/policies/organisation.yaml" --audit-key-uri "$(audit_uri issuing-oca)" \
  --audit-pin-source env:DEMO_PIN "$SERIAL" --reason keyCompromise
run "$SMKI" ca crl $(sign_as issuing-oca) --policy "$REPO/policies/organisation.yaml" --issuer-cert issuing-oca.pem --out organisation-crl-1.pem
run openssl crl -in organisation-crl-1.pem -noout -text
run "$SMKI" lint organisation-crl-1.pem
echo "(the revoked certificate now fails path validation; openssl agrees)"
"$SMKI" verify org-supplier-ka.pem --anchor root-oca.pem --intermediate issuing-oca.pem --crl organisation-crl-1.pem || true
cat root-oca.pem issuing-oca.pem > oca-chain.pem
openssl verify -crl_check -CAfile oca-chain.pem -CRLfile organisation-crl-1.pem org-supplier-ka.pem || true
run "$SMKI" ca list --state state/issuing-oca

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
run "$SMKI" librarian lodge --db repository.db --actor demo-librarian --audit-key-uri "$AUDIT_KEY" --pin-source env:DEMO_PIN --trust-root root-oca.pem root-dca.pem
run "$SMKI" librarian lodge --db repository.db --actor demo-librarian --audit-key-uri "$AUDIT_KEY" --pin-source env:DEMO_PIN \
  issuing-oca.pem issuing-dca.pem org-supplier-ds.pem device-ka.pem
echo "(lodging the same certificate twice is refused, and the refusal is audited too:)"
"$SMKI" librarian lodge --db repository.db --actor demo-librarian --audit-key-uri "$AUDIT_KEY" --pin-source env:DEMO_PIN device-ka.pem || true
run "$SMKI" librarian find --db repository.db --eui64 90-B3-D5-1F-30-01-00-00

step "9. The SMKI Repository web service on loopback, queried like a party would (XML over HTTP, apikey)"
export DEMO_API_KEY=$(openssl rand -hex 16)
PORT=$("$REPO/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SMKI" librarian serve --db repository.db --port "$PORT" --api-key-source env:DEMO_API_KEY &
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
kill $SERVER; wait $SERVER 2>/dev/null || true

step "10. An auditor checks the trail: every entry hash-chained, every checkpoint signed by the audit key in the HSM"
run "$SMKI" hsm pubkey --key-uri "$AUDIT_KEY" --out librarian-audit.pub.pem
run "$SMKI" audit show --db repository.db
run "$SMKI" audit export --db repository.db --out audit-trail.json
run "$SMKI" audit verify --export audit-trail.json --public-key librarian-audit.pub.pem
for authority in root-oca root-dca issuing-oca issuing-dca; do   # key generation and issuance: each authority's own trail
  run "$SMKI" hsm pubkey --key-uri "$(audit_uri "$authority")" --out "state/$authority/audit.pub.pem"
  run "$SMKI" audit verify --db "state/$authority/smki.db" --public-key "state/$authority/audit.pub.pem"
done

step "Done. Everything is in $OUT"
