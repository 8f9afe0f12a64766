"""Provisioning checks the local LLM server by a real completion before it calls the venv complete.

The llama venv here gets a deliberately broken llama_cpp (tests/support/fake_llama): its server
lists its models and dies with SIGSEGV on the first chat completion, as a build using CPU
instructions the machine does not allow did. Provisioning must fail with one clear line naming
the crash and the log, and leave the venv unmarked so the next run does not trust it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_provisioning_refuses_a_llama_server_that_crashes_on_a_completion(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PRELABEL_CACHE": str(cache), "PRELABEL_SKIP": "ls,dev,browser",
           "PRELABEL_LLAMA_SPEC": str(ROOT / "tests" / "support" / "fake_llama")}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "provision.sh")], env=env, capture_output=True,
                         text=True, timeout=900, check=False)
    assert run.returncode != 0, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("[provision] ERROR")]
    assert len(errors) == 1, run.stderr
    assert "failed its smoke completion" in errors[0] and "killed by SIGSEGV" in errors[0], errors[0]
    log = cache / "llama-smoke.log"
    assert f"log: {log}" in errors[0] and "crashing like a bad CPU build" in log.read_text()
    venv = cache / "llama-cpp-0.3.36"
    assert (venv / "bin" / "python").exists() and not (venv / ".ok").exists(), "a broken venv marked complete"
    assert "installed" not in run.stdout.splitlines()[-1]
