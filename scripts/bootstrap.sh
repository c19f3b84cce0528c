#!/usr/bin/env bash
# Installs what smki needs on a fresh Debian machine: SoftHSM2, OpenSC, OpenSSL, PostgreSQL (apt-get),
# a virtualenv in .venv and the package with its test extra. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
command -v pkcs11-tool  >/dev/null || need_apt+=(opensc)
command -v openssl      >/dev/null || need_apt+=(openssl)
# The second-module test suite (tests/test_second_module.py): NSS softokn reached through p11-kit-proxy.
compgen -G "/usr/lib/*/libsoftokn3.so" >/dev/null || compgen -G "/usr/lib/libsoftokn3.so" >/dev/null || need_apt+=(libnss3)
command -v certutil     >/dev/null || need_apt+=(libnss3-tools)
command -v p11-kit      >/dev/null || need_apt+=(p11-kit)
compgen -G "/usr/lib/*/p11-kit-proxy.so" >/dev/null || compgen -G "/usr/lib/p11-kit-proxy.so" >/dev/null || need_apt+=(p11-kit-modules)
# The IANA time zones: the policy's usage rules read their windows on Europe/London's clock (zoneinfo).
[ -e /usr/share/zoneinfo/Europe/London ] || need_apt+=(tzdata)
# PostgreSQL server binaries: the tests run the store on a throwaway server (tests/postgres_server.py).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || need_apt+=(postgresql)
# The portal's browser tests (tests/test_portal_browser.py): Debian's Chromium, driven headless by Playwright.
command -v chromium     >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import smki, pkcs11, pkilint, pytest, psycopg, hypothesis, playwright, jinja2, argon2" 2>/dev/null || [ pyproject.toml -nt .venv/.smki-installed ]; then
  echo "== installing smki into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.smki-installed
fi
