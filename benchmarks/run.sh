#!/usr/bin/env bash
# Runs every benchmark in this folder and prints its figures. Usage: bash benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
for bench in benchmarks/bench_*.py; do
  echo "== $bench"
  .venv/bin/python "$bench"
done
