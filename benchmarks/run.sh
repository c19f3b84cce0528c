#!/usr/bin/env bash
# Runs every benchmark in this folder and prints its figures. Usage: bash benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# wrk drives the web service benchmark (without it bench_repository.py falls back to slower Python clients).
if ! command -v wrk >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
for bench in benchmarks/bench_*.py; do
  # bench_repository.py generates a 10,000,000-certificate store once (~11 GB, minutes; cached in
  # benchmarks/.cache/): SMKI_BENCH_REPOSITORY_SIZE=N picks another size, 0 skips it.
  if [ "$bench" = benchmarks/bench_repository.py ] && [ "${SMKI_BENCH_REPOSITORY_SIZE:-10000000}" = 0 ]; then
    echo "== $bench skipped (SMKI_BENCH_REPOSITORY_SIZE=0)"; continue
  fi
  # bench_service.py serves a 2,000,000-certificate copy of that synthetic store (generated once, ~2 minutes):
  # SMKI_BENCH_SERVICE_REPOSITORY_SIZE=N picks another size, 0 leaves the repository out of it.
  echo "== $bench"
  .venv/bin/python "$bench"
done
