"""docker-compose.yml is valid for every profile (needs `docker compose` or `docker-compose`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profiles", [[], ["gpu"], ["production"], ["gpu", "production"]], ids=str)
def test_compose_config_is_valid(profiles: list[str], tmp_path: Path) -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    # a copy of the deployment folder, with the example .env in place of the user's
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    args = [*compose, "--project-directory", str(tmp_path), "-f", str(tmp_path / "docker-compose.yml")]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"label-studio", "redis", "backend", "worker"} <= set(services)
    for name in ("label-studio", "redis", "backend", "worker"):
        assert not services[name].get("profiles"), f"{name} must run without a profile"
        assert services[name].get("restart") == "unless-stopped"
    # compose v2 drops services of inactive profiles from `config`; v1 lists them with their profile
    for name, profile in (("vllm", "gpu"), ("vllm-reviewer", "gpu"), ("db", "production")):
        if name in services:
            assert services[name]["profiles"] == [profile]
        else:
            assert profile not in profiles
    for name in ("backend", "worker"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_no_secret_in_compose_or_image() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("OPENAI_API_KEY", "LABEL_STUDIO_API_KEY", "PRELABEL_WEBHOOK_SECRET", "PASSWORD"):
        assert f"{name}=" not in compose and f"{name}:" not in compose, name
        assert name not in dockerfile, name
    assert ".env" in (ROOT / ".dockerignore").read_text()
