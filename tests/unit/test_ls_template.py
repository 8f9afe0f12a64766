"""Label Studio's data folder template: migrated once, copied into new data folders, never over a database."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from prelabel.stack.label_studio import DATABASE, StartupError, migrated_template, seed_from_template


def fake_venv(tmp_path: Path, body: str) -> Path:
    """A venv whose `label-studio` is a shell script (args: version --data-dir DIR)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "label-studio"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return venv


MIGRATE = 'echo run >> "$COUNT"; echo migrated > "$3/label_studio.sqlite3"; echo SECRET_KEY=x > "$3/.env"\n'


def test_migrated_once_then_copied_without_the_secret(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, MIGRATE)
    env = {**os.environ, "COUNT": str(tmp_path / "count")}
    template = tmp_path / "template"
    assert seed_from_template(tmp_path / "a", template, venv=venv, env=env)
    assert seed_from_template(tmp_path / "b", template, venv=venv, env=env)
    assert (tmp_path / "count").read_text().splitlines() == ["run"], "migrated more than once"
    for data in ("a", "b"):
        assert (tmp_path / data / DATABASE).read_text() == "migrated\n"
        assert not (tmp_path / data / ".env").exists()
    assert sorted(p.name for p in template.iterdir()) == [".lock", DATABASE], "scratch folder left behind"


def test_an_existing_database_is_never_replaced(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, MIGRATE)
    data = tmp_path / "data"
    data.mkdir()
    (data / DATABASE).write_text("the user's projects")
    assert not seed_from_template(data, tmp_path / "template", venv=venv, env={**os.environ, "COUNT": "/dev/null"})
    assert (data / DATABASE).read_text() == "the user's projects"


def test_failed_migrations_leave_no_template(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, 'echo half > "$3/label_studio.sqlite3"; echo boom >&2; exit 3\n')
    with pytest.raises(StartupError, match="exit 3"):
        migrated_template(tmp_path / "template", venv=venv, env=dict(os.environ))
    assert not (tmp_path / "template" / DATABASE).exists()
