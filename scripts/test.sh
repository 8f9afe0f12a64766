#!/usr/bin/env bash
# The one test command: provision the cached virtualenvs, then run pytest from venv-dev.
#
#   bash scripts/test.sh                 # whole suite (unit + e2e against real LS / llama.cpp / Redis)
#   bash scripts/test.sh -m "not e2e"    # any pytest arguments are passed through
#   bash scripts/test.sh tests/test_harness_smoke.py -x
#   PRELABEL_TEST_WORKERS=0 bash scripts/test.sh        # one serial pytest (no pytest-xdist)
#
# The suite runs in PRELABEL_TEST_WORKERS (default 2) pytest-xdist workers, a test file per worker
# at a time (--dist loadfile: a file's tests keep their order and module fixtures; handed out in
# collection order, which tests/conftest.py starts with the longest files); each worker
# starts its own Label Studio, llama.cpp server and Redis when its first test needs them, with
# one core's worth of threads each (below). The JUnit report (every
# test's duration) goes to PRELABEL_TEST_REPORT (default artifacts/test-report.xml);
# `python benchmarks/suite_durations.py artifacts/test-report.xml` sums it per group.
#
# Environment: see scripts/provision.sh (PRELABEL_CACHE, PRELABEL_EXTRAS, ...); REDIS_URL uses an
# existing Redis instead of the embedded one (shared by the workers: prefer the embedded ones).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PRELABEL_CACHE:-$HOME/.cache/prelabel}"
VENV="${PRELABEL_DEV_VENV:-$CACHE/venv-dev}"

bash "$REPO/scripts/provision.sh"

cd "$REPO"
WORKERS="${PRELABEL_TEST_WORKERS:-2}"
REPORT="${PRELABEL_TEST_REPORT:-$REPO/artifacts/test-report.xml}"
mkdir -p "$(dirname "$REPORT")"
# One core's worth of threads per worker: torch's OpenMP threads and llama.cpp's threads spin at
# every barrier, so two workers each running 2-thread processes on 2 cores wait on each other
# (two LoRA runs side by side: 250 s with 2 threads each, 73 s with 1; benchmarks/results/
# thread_oversubscription.txt). A variable already set wins.
if [ "$WORKERS" != 0 ]; then
    PER_WORKER=$(( $(nproc) / WORKERS )); [ "$PER_WORKER" -lt 1 ] && PER_WORKER=1
    for var in OMP_NUM_THREADS MKL_NUM_THREADS OPENBLAS_NUM_THREADS PRELABEL_LLM_THREADS; do
        [ -z "${!var:-}" ] && export "$var=$PER_WORKER"
    done
    echo "[test] $WORKERS workers, $PER_WORKER thread(s) each for torch, BLAS and llama.cpp"
fi
args=(-n "$WORKERS" --junitxml="$REPORT")
[ "$WORKERS" != 0 ] && args+=(--dist loadfile --no-loadscope-reorder)  # in collection order: longest files first (tests/conftest.py)
echo "[test] $VENV/bin/python -m pytest ${args[*]} $*"
set +e
"$VENV/bin/python" -m pytest "${args[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[test] ERROR: pytest collected no tests" >&2
fi
exit "$rc"
