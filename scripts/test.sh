#!/usr/bin/env bash
# The one test command: provision the cached virtualenvs, then run pytest from venv-dev.
#
#   bash scripts/test.sh                 # whole suite (unit + e2e against real LS / llama.cpp / Redis)
#   bash scripts/test.sh -m "not e2e"    # any pytest arguments are passed through
#   bash scripts/test.sh tests/test_harness_smoke.py -x
#
# Environment: see scripts/provision.sh (PRELABEL_CACHE, PRELABEL_EXTRAS, ...); REDIS_URL uses an
# existing Redis instead of the embedded one.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PRELABEL_CACHE:-$HOME/.cache/prelabel}"
VENV="${PRELABEL_DEV_VENV:-$CACHE/venv-dev}"

bash "$REPO/scripts/provision.sh"

cd "$REPO"
echo "[test] $VENV/bin/python -m pytest $*"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[test] ERROR: pytest collected no tests" >&2
fi
exit "$rc"
