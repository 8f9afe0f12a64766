#!/usr/bin/env bash
# First and second run of `bash scripts/run.sh` from a fresh clone with empty caches: seconds from
# the start to `up`'s count line (`N/M tasks pre-annotated`, valid regions only), every output line
# timestamped. Each run is stopped with `prelabel down` once that line has appeared.
#
#   bash benchmarks/first_run.sh [WORKDIR]     # default /tmp/prelabel-first-run (~15 min, ~3 GB)
#
# WORKDIR gets a clone of this checkout's HEAD, its own PRELABEL_CACHE, PIP_CACHE_DIR, HF_HOME
# and PRELABEL_DATA_DIR (all new); the default ports (8080, 9090, ...) must be free.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/prelabel-first-run}"
if [ -e "$WORK" ]; then echo "$WORK exists: give a new folder" >&2; exit 2; fi
mkdir -p "$WORK"
git clone -q "$REPO" "$WORK/repo"
cd "$WORK/repo"
export PRELABEL_CACHE="$WORK/cache" PIP_CACHE_DIR="$WORK/pip" HF_HOME="$WORK/hf" PRELABEL_DATA_DIR="$WORK/data"
echo "=== $(git log --oneline -1), $(nproc) cores, $(date -u +%FT%TZ)"
for run in 1 2; do
    start=$(date +%s)
    echo "=== run $run: load $(cut -d' ' -f1-3 /proc/loadavg)"
    bash scripts/run.sh 2>&1 | while IFS= read -r line; do
        echo "[+$(( $(date +%s) - start ))s] $line"
        case "$line" in "[up] "*" tasks pre-annotated"*) touch "$WORK/counted.$run" ;; esac
    done &
    reader=$!
    while [ ! -e "$WORK/counted.$run" ] && kill -0 "$reader" 2>/dev/null; do sleep 1; done
    echo "=== run $run: count line after $(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$PRELABEL_CACHE/venv-dev/bin/prelabel" down 2>&1 | sed 's/^/[down] /'
    wait "$reader" || true
done
