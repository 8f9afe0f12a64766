#!/usr/bin/env bash
# The one run command: provision the cached virtualenvs, then start the local stack
# (Label Studio + llama.cpp on SmolLM2 + the prelabel backend on embedded Redis) with a sample
# project pre-annotated. Ctrl-C stops everything.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PRELABEL_CACHE:-$HOME/.cache/prelabel}/venv-dev"
bash "$REPO/scripts/provision.sh"
exec "$VENV/bin/python" "$REPO/scripts/local_stack.py"
