"""`stack/llm_smoke.py` runs where prelabel is not installed.

`scripts/provision.sh` runs it with the llama venv's Python (`python -I stack/llm_smoke.py ...`) to
check a fresh llama.cpp build before marking the venv complete. An import of anything outside the
standard library breaks provisioning on every fresh machine (issue 14's error classes once did);
a cached venv hides it, because its smoke check already passed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SMOKE = Path(__file__).resolve().parents[2] / "stack" / "llm_smoke.py"


def test_the_smoke_check_runs_with_the_standard_library_only() -> None:
    # -I: no PYTHONPATH, no user site; -S: no site-packages either (so no prelabel, no httpx)
    run = subprocess.run([sys.executable, "-I", "-S", str(SMOKE), "--help"], capture_output=True, text=True,
                         timeout=60, cwd="/", check=False)
    assert run.returncode == 0, run.stderr
    assert "--base-url" in run.stdout and "--model" in run.stdout


def test_a_server_that_is_not_there_is_one_failed_line() -> None:
    run = subprocess.run([sys.executable, "-I", "-S", str(SMOKE), "--base-url", "http://127.0.0.1:9/v1"],
                         capture_output=True, text=True, timeout=120, cwd="/", check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("FAILED: ") or run.stderr.startswith("FAILED: "), run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
