"""Where the provisioned applications live (``scripts/provision.sh`` creates them).

Label Studio and the llama.cpp server are applications with their own dependency pins, so each
has its own virtualenv under ``${PRELABEL_CACHE:-~/.cache/prelabel}``; nothing here installs
anything, it only finds them and says clearly what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

LS_VERSION = "1.23.2"
LLAMA_CPP_VERSION = "0.3.36"


def cache_dir() -> Path:
    return Path(os.environ.get("PRELABEL_CACHE") or Path.home() / ".cache" / "prelabel")


def ls_venv() -> Path:
    return Path(os.environ.get("PRELABEL_LS_VENV") or cache_dir() / f"label-studio-{LS_VERSION}")


def llama_venv() -> Path:
    return Path(os.environ.get("PRELABEL_LLAMA_VENV") or cache_dir() / f"llama-cpp-{LLAMA_CPP_VERSION}")


def require_venv(venv: Path, what: str) -> Path:
    """Fail with a clear message when a provisioned venv is missing or incomplete."""
    if not (venv / "bin" / "python").exists() or not (venv / ".ok").exists():
        raise FileNotFoundError(
            f"{what} virtualenv missing or incomplete at {venv} (no bin/python or .ok marker); "
            "run scripts/provision.sh (scripts/run.sh and scripts/test.sh do it for you)"
        )
    return venv
