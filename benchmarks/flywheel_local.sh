#!/usr/bin/env bash
# The local flywheel run behind the README's figures, alone: tests/e2e/test_flywheel_local.py with
# 30 labeled queries per intent (180 -> ~139 train rows, 35 LoRA steps on CPU; ~12 min on 2 quiet
# cores; PRELABEL_FLYWHEEL_LABELED_PER_INTENT changes it). Its output (accuracies, stage times) goes
# to benchmarks/results/flywheel_local.txt; the run's flywheel.md is printed at the end.
#
#   bash benchmarks/flywheel_local.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PRELABEL_DEV_VENV:-${PRELABEL_CACHE:-$HOME/.cache/prelabel}/venv-dev}"
BASETEMP="$(mktemp -d -t prelabel-flywheel-XXXX)"
cd "$REPO"
echo "[flywheel benchmark] basetemp $BASETEMP"
PRELABEL_FLYWHEEL_LABELED_PER_INTENT="${PRELABEL_FLYWHEEL_LABELED_PER_INTENT:-30}" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider --basetemp="$BASETEMP" -s -q \
    tests/e2e/test_flywheel_local.py 2>&1 | tee "$REPO/benchmarks/results/flywheel_local.txt"
cat "$BASETEMP"/*/data/train/*/*/flywheel.md
