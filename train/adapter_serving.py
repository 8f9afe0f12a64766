"""Serving a fine-tuned model as a LoRA adapter of the running vLLM (compose's gpu profile).

vLLM started with ``--enable-lora``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=true``,
``VLLM_PLUGINS=lora_filesystem_resolver`` and ``VLLM_LORA_RESOLVER_CACHE_DIR=<folder>`` loads the
adapter in ``<folder>/<name>/`` the first time a request asks for model ``<name>``, and again after
a restart. So serving a promoted model is writing its adapter there under its served name: one
server of the base model, one adapter per project, nothing merged, no server to start or stop.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from prelabel.errors import UserError

SERVED_BY = "vllm-lora"  # the active model record's ``served_by`` for an adapter served this way
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a served model name that is one folder name
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(UserError, RuntimeError):
    """The adapter cannot be published for vLLM (no adapter files, a name that is not a folder name)."""


def publish_adapter(adapter_dir: Path, resolver_dir: Path, name: str) -> Path:
    """Copy the adapter to ``<resolver_dir>/<name>/`` in one rename (vLLM never reads half a copy)."""
    if not _NAME.match(name):
        raise AdapterError(f"served model name {name!r} must be one folder name (letters, digits, . _ -)")
    source = Path(adapter_dir)
    missing = [f for f in ADAPTER_FILES if not (source / f).is_file()]
    if missing:
        raise AdapterError(f"{source} is not a LoRA adapter (no {', '.join(missing)})")
    resolver_dir = Path(resolver_dir)
    resolver_dir.mkdir(parents=True, exist_ok=True)
    target = resolver_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=resolver_dir))
    try:
        for item in source.iterdir():
            if item.is_file():  # the adapter and its tokenizer files; checkpoints stay in the run folder
                shutil.copy2(item, staging / item.name)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
