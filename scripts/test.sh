#!/usr/bin/env bash
# One command for a fresh machine: install what is needed, then run the whole test suite
# against a real SoftHSM token made for this run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
