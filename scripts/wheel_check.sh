#!/usr/bin/env bash
# The wheel as a user gets it: build it, install it into a fresh virtualenv outside the checkout, and
# from an empty directory run the main commands. Each must exit 0 and print no traceback; the wheel
# must hold every file of smki/data. Called by .ci/run after the tests; prints one line per step.
#
# Usage: bash scripts/wheel_check.sh
#   PYTHON         the interpreter for the virtualenv (default python3)
#   SMKI_FIXTURES  the ZAZ1 test-PKI fixtures (default: shared/fixtures/dcc-test-pki beside the checkout)
# Dependencies come from pip's cache or the configured index, as for any install.
set -euo pipefail

CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)
FIXTURES="${SMKI_FIXTURES:-$(dirname "$CHECKOUT")/shared/fixtures/dcc-test-pki}"
FIXTURE="$FIXTURES/org-networkOperator-ka-90B3D51F30020000.pem"
PYTHON="${PYTHON:-python3}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smki-wheel-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/venv"
SMKI="$VENV/bin/smki"
mkdir -p "$WORK/logs" "$WORK/empty"
STARTED=$SECONDS

step() { printf 'wheel check: %-60s (%ss)\n' "$*" "$((SECONDS - STARTED))"; }
fail() { echo "wheel check: FAILED: $*" >&2; exit 1; }
# checked NAME COMMAND...: runs COMMAND, its output in $WORK/logs/NAME; fails on a non-zero exit or a traceback.
checked() {
  local log="$WORK/logs/$1" status=0; shift
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then cat "$log" >&2; fail "exit $status from: $*"; fi
  if grep -q "Traceback" "$log"; then cat "$log" >&2; fail "a traceback from: $*"; fi
}

[ -f "$FIXTURE" ] || fail "no fixture certificate at $FIXTURE (set SMKI_FIXTURES)"
# Nothing of the checkout may leak into the installed package's runs.
unset PYTHONPATH SOFTHSM2_CONF SMKI_PKCS11_MODULE

# Built from a copy of the checkout's files (tracked, and new ones git does not ignore): setuptools would
# otherwise leave build/ and smki.egg-info/ in the checkout, and reuse a stale build/ in the next wheel.
step "copy the checkout's files"
mkdir "$WORK/src"
if git -C "$CHECKOUT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$CHECKOUT" ls-files -z --cached --others --exclude-standard \
    | (cd "$CHECKOUT" && tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"
else  # not a git checkout (an unpacked archive): everything but what a run leaves behind
  tar -C "$CHECKOUT" --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=./demo-out \
    --exclude=./benchmarks/.cache --exclude=__pycache__ -cf - . | tar -xf - -C "$WORK/src"
fi

step "a fresh virtualenv in $WORK"
checked venv "$PYTHON" -m venv "$VENV"

step "build the wheel (pip wheel --no-deps)"
checked wheel "$VENV/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/smki-*.whl)

step "the wheel holds every file of smki/data"
checked contents "$VENV/bin/python" - "$WHEEL" "$CHECKOUT" <<'PY'
import sys, zipfile
from pathlib import Path
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
data = Path(sys.argv[2]) / "smki" / "data"
shipped = {p.relative_to(data.parent.parent).as_posix() for p in data.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
required = {f"smki/data/{name}" for name in ("policies/organisation.yaml", "policies/device.yaml", "policies/policy.schema.json",
                                              "ceremonies/ceremony.schema.json", "ceremonies/root-oca.yaml",
                                              "softhsm/softhsm2.conf.template")}
missing = sorted((shipped | required) - names)
assert not missing, f"missing from the wheel: {missing}"
print(f"{len(shipped)} data files in the wheel")
PY

step "install the wheel (dependencies from pip's cache or the index)"
checked install "$VENV/bin/pip" install -q --disable-pip-version-check "$WHEEL"

cd "$WORK/empty"
checked where "$VENV/bin/python" -c "import smki, sys; assert smki.__file__.startswith(sys.prefix), smki.__file__"

step "smki policy check builtin:organisation builtin:device"
checked policy-check "$SMKI" policy check builtin:organisation builtin:device

step "smki lint --environment test $(basename "$FIXTURE")"
checked lint "$SMKI" lint --environment test "$FIXTURE"

step "smki ceremony examples, then smki ceremony check of a copy"
checked examples "$SMKI" ceremony examples ceremonies
checked ceremony-check "$SMKI" ceremony check ceremonies/root-oca.yaml

step "without the postgres extra, a postgresql:// URL names it (exit 3)"
status=0; "$SMKI" audit show --db postgresql://smki@localhost/none >"$WORK/logs/no-psycopg" 2>&1 || status=$?
[ "$status" -eq 3 ] && grep -q "pip install 'smki\[postgres\]'" "$WORK/logs/no-psycopg" && ! grep -q Traceback "$WORK/logs/no-psycopg" \
  || { cat "$WORK/logs/no-psycopg" >&2; fail "a postgresql:// URL without psycopg: exit $status"; }

step "a private SoftHSM store, a token, a test PKI (smki.testing)"
checked softhsm-conf "$SMKI" hsm softhsm-conf hsm
export SOFTHSM2_CONF="$WORK/empty/hsm/softhsm2.conf"
WHEEL_CHECK_PIN=$("$VENV/bin/python" -c "import secrets; print(secrets.token_hex(12))")
WHEEL_CHECK_SO_PIN=$("$VENV/bin/python" -c "import secrets; print(secrets.token_hex(12))")
export WHEEL_CHECK_PIN WHEEL_CHECK_SO_PIN  # the PINs reach smki through the environment only
checked pki "$VENV/bin/python" - <<'PY'
import os
from pathlib import Path
from smki.testing import SoftHsmStore, TestPKI

token = SoftHsmStore.for_process().new_token("WHEEL-CHECK", pin=os.environ["WHEEL_CHECK_PIN"], so_pin=os.environ["WHEEL_CHECK_SO_PIN"])
with TestPKI.create(Path("pki"), token=token) as pki:
    Path("supplier.csr").write_bytes(pki.organisation_csr("90-B3-D5-1F-30-01-00-00", role="supplier", usage="DS").der)
    Path("issuing-oca.key-uri").write_text(pki.key("issuing-oca").uri)
    print("issuing-oca state", pki.state("issuing-oca"), "certificate", pki.certificate_file("issuing-oca"))
PY

# The Issuing OCA's configuration file: its key, PIN source, state, policy and certificate, written once.
cat > issuing-oca.yaml <<CONFIG
kind: issuing-oca
hsm:
  key_uri: "$(cat issuing-oca.key-uri)"
  pin_source: env:WHEEL_CHECK_PIN
state: pki/issuing-oca
policy: builtin:organisation
environment: test
issuer_certificate: pki/certificates/issuing-oca.pem
CONFIG
step "smki config show --config issuing-oca.yaml ca issue-org"
checked config-show "$SMKI" config show --config issuing-oca.yaml ca issue-org --requester supplier --out org-supplier.pem supplier.csr
step "smki ca issue-org --config issuing-oca.yaml: one Organisation Certificate"
checked issue-org "$SMKI" ca issue-org --config issuing-oca.yaml --requester supplier --out org-supplier.pem supplier.csr
checked lint-issued "$SMKI" lint --environment test org-supplier.pem
checked verify-issued openssl verify -CAfile pki/certificates/root-oca.pem -untrusted pki/certificates/issuing-oca.pem org-supplier.pem

step "passed: $(head -n 1 "$WORK/logs/issue-org")"
