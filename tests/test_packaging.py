"""The wheel: everything under the single ``prelabel`` namespace, templates included, and it works
when installed outside the repository (no editable finder, no repo on sys.path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_COPY = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".ruff_cache", ".pytest_cache",
    ".prelabel", "artifacts", "*.pyc",
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PRELABEL_", "OPENAI_", "LABEL_STUDIO_", "REDIS_URL", "PYTHON", "VIRTUAL_ENV"))
    }
    env["XDG_DATA_HOME"] = str(home / "data")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build from a copy of the repository so no build/ or egg-info lands in the work tree."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=SKIP_COPY, symlinks=True)
    out = base / "dist"
    result = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        cwd=base, env=_clean_env(base),
    )
    if result.returncode != 0 and any(
        hint in result.stderr for hint in ("No matching distribution found for setuptools", "Failed to establish")
    ):
        pytest.skip("building needs setuptools>=69 from the package index, which cannot be reached")
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = out.glob("prelabel-*.whl")
    return path


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "prelabel/ml_backend/server.py",
        "prelabel/prediction/predictor.py",
        "prelabel/label_config/templates/search_intent.xml",
        "prelabel/label_config/templates/search_intent.yaml",
        "prelabel/label_config/templates/ner.xml",
        "prelabel/label_config/templates/ner.yaml",
        "prelabel/export/__init__.py",
        "prelabel/export/synonyms.txt",  # the offline augmentation table (export --augment)
        "prelabel/train/__init__.py",
        "prelabel/cli.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    top_levels = {name.split("/", 1)[0] for name in names}
    for forbidden in ("ml_backend", "prediction", "export", "train", "label_config", "tests", "benchmarks", "scripts"):
        assert forbidden not in top_levels, f"top-level {forbidden}/ in the wheel"
    assert top_levels == {"prelabel", next(t for t in top_levels if t.endswith(".dist-info"))}
    # Every file of the repository's templates folder is shipped.
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("prelabel/label_config/templates/")}
    templates = ROOT / "label_config" / "templates"
    in_repo = {p.name for p in templates.iterdir() if p.suffix in (".xml", ".yaml", ".jsonl")}
    assert shipped == in_repo


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A fresh venv holding only the wheel; dependencies come from the dev venv via a .pth file
    written after the install (so ``prelabel`` itself resolves to the wheel's copy)."""
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    env = _clean_env(base)
    result = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base, env=env)
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    result = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        cwd=base, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=base, env=env).stdout.strip())
    dev_paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_dev_dependencies.pth").write_text("\n".join(dev_paths) + "\n", encoding="utf-8")
    work = base / "elsewhere"
    work.mkdir()
    return venv, site, work, env


def _py(installed, code: str) -> subprocess.CompletedProcess:
    venv, _, work, env = installed
    return _run([str(venv / "bin" / "python"), "-c", code], cwd=work, env=env, timeout=120)


def test_installed_package_imports_from_the_wheel(installed):
    _, site, _, _ = installed
    result = _py(installed, (
        "import prelabel, prelabel.ml_backend.server, prelabel.label_config.guideline as g;"
        "print(prelabel.__file__); print(prelabel.ml_backend.server.__file__);"
        "print(g.shipped_templates())"
    ))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for path in lines[:2]:
        assert Path(path).resolve().is_relative_to(site.resolve()), path
    assert "search_intent" in lines[2] and "ner" in lines[2]


@pytest.mark.parametrize("name", ["train", "export", "ml_backend", "prediction", "label_config"])
def test_generic_top_level_names_are_not_installed(installed, name):
    result = _py(installed, f"import {name}")
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr


def test_console_script_help(installed):
    venv, _, work, env = installed
    result = _run([str(venv / "bin" / "prelabel"), "--help"], cwd=work, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "config" in result.stdout and "serve" in result.stdout


def test_config_check_on_an_installed_template(installed):
    venv, site, work, env = installed
    template = site / "prelabel" / "label_config" / "templates" / "search_intent.xml"
    assert template.is_file()
    result = _run(
        [str(venv / "bin" / "prelabel"), "config", "check", str(template), "--guideline", "search_intent"],
        cwd=work, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intent" in result.stdout and "prompt_version" in result.stdout
