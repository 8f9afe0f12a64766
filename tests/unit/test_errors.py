"""One error base, and one place (the root command group) that turns a user error into exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from prelabel.cli import Commands, app
from prelabel.errors import USER_ERROR_EXIT, ConfigError, PrelabelError, UserError
from prelabel.export.augment import AugmentError
from prelabel.export.mapping import MappingError
from prelabel.export.source import SourceError
from prelabel.jobs.events import EventError
from prelabel.label_config.controls import AnswerError
from prelabel.label_config.guideline import GuidelineError
from prelabel.label_config.schema import ConfigError as LabelConfigError
from prelabel.label_config.schema import TaskDataError
from prelabel.prediction.llm_client import LLMError
from prelabel.stack.processes import StartupError
from prelabel.stack.record import StackError
from prelabel.stack.up import ChildDied
from prelabel.studio.access import AccessRefused
from prelabel.train.config import ConfigError as TrainConfigError
from prelabel.train.data import DatasetError
from prelabel.train.engine_types import EngineError
from prelabel.train.merge import MergeError
from prelabel.train.models import ModelError
from prelabel.train.pipeline import FlywheelError

USER_ERRORS = [
    (ConfigError, ValueError), (GuidelineError, ValueError), (AccessRefused, LookupError),
    (StartupError, RuntimeError), (StackError, RuntimeError), (SourceError, RuntimeError), (MappingError, ValueError),
    (AugmentError, ValueError), (DatasetError, ValueError), (ModelError, ValueError), (EngineError, RuntimeError),
    (MergeError, RuntimeError), (FlywheelError, RuntimeError),
]


def test_the_two_config_errors_are_one() -> None:
    assert LabelConfigError is TrainConfigError is ConfigError


@pytest.mark.parametrize(("error", "builtin"), USER_ERRORS, ids=lambda e: getattr(e, "__name__", ""))
def test_user_errors_keep_their_builtin_base(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, UserError) and issubclass(error, builtin)


@pytest.mark.parametrize("error", [LLMError, EventError, AnswerError, TaskDataError])
def test_errors_that_are_not_the_users_to_fix_are_not_user_errors(error: type[Exception]) -> None:
    assert issubclass(error, PrelabelError) and not issubclass(error, UserError)


def _app(exc: Exception) -> typer.Typer:
    demo = typer.Typer(cls=Commands)

    @demo.command()
    def fail() -> None:
        raise exc

    @demo.command()
    def other() -> None:  # a second command keeps `fail` a subcommand, as in `prelabel`
        pass

    return demo


def test_root_group_turns_a_user_error_into_one_line_and_its_exit_code() -> None:
    result = CliRunner().invoke(_app(MappingError("labels [a] cannot be exported")), ["fail"])
    assert result.exit_code == USER_ERROR_EXIT == 2
    assert result.stderr.strip() == "error: labels [a] cannot be exported"  # markup in the message stays text
    assert "Traceback" not in result.output
    died = CliRunner().invoke(_app(ChildDied("llm died (killed by SIGSEGV)")), ["fail"])
    assert died.exit_code == 1 and "llm died" in died.stderr


def test_other_errors_keep_their_traceback() -> None:
    result = CliRunner().invoke(_app(LLMError("timeout", "boom")), ["fail"])
    assert isinstance(result.exception, LLMError) and result.exit_code == 1


def test_prelabel_commands_report_user_errors_through_the_root_group(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    config = tmp_path / "c.xml"
    config.write_text('<View><Text name="text" value="$text"/><Choices name="c" toName="text">'
                      '<Choice value="a"/><Choice value="b"/></Choices></View>')
    result = CliRunner().invoke(app, ["config", "check", str(config), "-g", str(missing)])
    assert result.exit_code == 2 and result.stderr.startswith("error:") and "Traceback" not in result.output
    empty = tmp_path / "empty.xml"
    empty.write_text('<View><Text name="text" value="$text"/></View>')
    result = CliRunner().invoke(app, ["predict", "-c", str(empty), "-t", str(config)])
    assert result.exit_code == 2 and "error:" in result.stderr
