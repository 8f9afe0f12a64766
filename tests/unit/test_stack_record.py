"""The stack record (``prelabel.stack.record``): what ``up`` leaves in stack.json and whether that
``up`` still runs, read the same way by ``prelabel status``/``down`` and ``prelabel train``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prelabel.pids import pid_alive
from prelabel.settings import Settings
from prelabel.stack.record import StackError, StackRecord, load_record, record_path, stack_running


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_saved_record_reads_back_private_and_running_only_while_its_up_lives(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert not stack_running(settings), "no stack.json: no stack"
    StackRecord(pid=os.getpid(), ls_port=8123, basic_auth=["u", "p"]).save(record_path(settings))
    assert record_path(settings).stat().st_mode & 0o777 == 0o600, "stack.json holds the admin login"
    record = load_record(settings)
    assert (record.ls_port, record.backend_auth()) == (8123, ("u", "p"))
    assert stack_running(settings)
    StackRecord(pid=_dead_pid()).save(record_path(settings))
    assert not stack_running(settings), "the pid of an `up` that exited is not a running stack"


def test_a_malformed_login_is_a_clear_stack_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="ls_credentials"):
        StackRecord(ls_credentials=["only-a-user"]).ls_login()


def test_a_zombie_is_not_alive() -> None:
    """Dead but not reaped (nobody waits for it): its pid still answers signals, yet it runs nothing."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            break
        time.sleep(0.01)
    try:
        assert not pid_alive(child.pid)
        assert pid_alive(os.getpid())
        assert not pid_alive(None) and not pid_alive(0)
    finally:
        child.wait()
