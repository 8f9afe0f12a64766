"""A merged model as one GGUF file, so the local llama.cpp server can serve what was trained.

The converter is llama.cpp's own ``convert_hf_to_gguf.py`` with its vendored ``gguf-py``, taken
at provisioning from the sdist of the llama-cpp-python version the server runs
(``scripts/provision.sh`` -> ``<llama venv>/share/llama-convert``), so the file matches what that
server reads. It runs in a child process with this interpreter (torch, transformers,
sentencepiece from the ``train`` extra); nothing is downloaded. The GGUF keeps the tokenizer and
its chat template, so the server formats the backend's messages exactly as training did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prelabel.errors import UserError
from prelabel.stack.locations import llama_venv

RECORD_NAME = "prelabel_gguf.json"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


class GGUFError(UserError, RuntimeError):
    """The merged model could not be converted (converter missing, conversion failed)."""


@dataclass
class GGUFResult:
    path: Path
    outtype: str
    size_bytes: int
    seconds: float


def converter_dir() -> Path:
    """Where provisioning put the converter (``PRELABEL_LLAMA_CONVERT`` overrides)."""
    return Path(os.environ.get("PRELABEL_LLAMA_CONVERT") or llama_venv() / "share" / "llama-convert")


def convert(merged_dir: Path, out: Path, *, outtype: str = "f16", timeout: float = 1800.0) -> GGUFResult:
    """Convert ``merged_dir`` (``prelabel train merge`` output) to the GGUF file ``out``."""
    import time

    merged_dir, out = Path(merged_dir), Path(out)
    if outtype not in OUTTYPES:
        raise GGUFError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    if not (merged_dir / "config.json").is_file():
        raise GGUFError(f"{merged_dir} is not a merged model directory (no config.json); run `prelabel train merge`")
    tool = converter_dir()
    script = tool / "convert_hf_to_gguf.py"
    if not (tool / ".ok").is_file() or not script.is_file():
        raise GGUFError(f"llama.cpp's GGUF converter is missing at {tool}; run scripts/provision.sh")
    if out.exists():
        raise GGUFError(f"{out} already exists; choose a new file")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    log = out.with_name(out.name + ".log")
    env = {**os.environ, "PYTHONPATH": str(tool / "gguf-py"), "NO_LOCAL_GGUF": "1"}
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as handle:
        try:
            done = subprocess.run(
                [sys.executable, str(script), str(merged_dir), "--outfile", str(partial), "--outtype", outtype],
                stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise GGUFError(f"the GGUF conversion took more than {timeout:.0f} s; log: {log}") from None
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise GGUFError(f"the GGUF conversion failed (exit {done.returncode}): {tail[0][:200]}; log: {log}")
    partial.replace(out)
    seconds = time.monotonic() - started
    record = {"kind": "prelabel.gguf", "time": datetime.now(UTC).isoformat(timespec="seconds"),
              "merged_dir": str(merged_dir.resolve()), "gguf": str(out.resolve()), "outtype": outtype,
              "converter": str(script), "size_bytes": out.stat().st_size}
    (out.parent / RECORD_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return GGUFResult(out, outtype, out.stat().st_size, seconds)
