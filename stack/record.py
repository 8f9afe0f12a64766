"""The record ``prelabel up`` keeps in ``<data>/stack/stack.json``, and whether that ``up`` runs.

One module for every reader of the record: ``up``/``down``/``status`` (``stack/up.py``), the CLI,
and ``prelabel train`` (which serves a promoted model itself only when no ``up`` does).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prelabel.errors import UserError
from prelabel.pids import pid_alive
from prelabel.settings import Settings


class StackError(UserError, RuntimeError):
    """A clear, user-facing reason why the stack cannot start or stopped (no traceback needed)."""


@dataclass
class StackRecord:
    """What ``up`` leaves in ``<data>/stack/stack.json`` (0600: it holds the local admin login)."""

    pid: int = 0
    ls_port: int = 8080
    backend_port: int = 9090
    llm_port: int = 8000
    ls_credentials: list[str] = field(default_factory=list)  # username, password, legacy token
    webhook_secret: str = ""
    basic_auth: list[str] = field(default_factory=list)
    project_id: int | None = None
    children: dict[str, int] = field(default_factory=dict)
    llm_base_url: str = ""
    models: dict[str, dict] = field(default_factory=dict)  # project -> promoted model served by this up

    @classmethod
    def load(cls, path: Path) -> StackRecord:
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def running(self) -> bool:
        """Whether the ``up`` that wrote this record is still running."""
        return bool(self.pid and pid_alive(self.pid))

    def ls_login(self) -> tuple[str, str, str] | None:
        """Label Studio's admin (username, password, legacy token); None before the first ``up``."""
        if not self.ls_credentials:
            return None
        if len(self.ls_credentials) != 3:
            raise StackError(f"stack.json: ls_credentials must be [username, password, token], "
                             f"not {len(self.ls_credentials)} values")
        username, password, token = self.ls_credentials
        return username, password, token

    def backend_auth(self) -> tuple[str, str] | None:
        """The backend's basic-auth login (user, password); None before the first ``up``."""
        if not self.basic_auth:
            return None
        if len(self.basic_auth) != 2:
            raise StackError(f"stack.json: basic_auth must be [user, password], not {len(self.basic_auth)} values")
        user, password = self.basic_auth
        return user, password

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)


def stack_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "stack"


def record_path(settings: Settings) -> Path:
    return stack_dir(settings) / "stack.json"


def load_record(settings: Settings) -> StackRecord:
    """The record of this data directory's ``up`` (an empty one before the first)."""
    return StackRecord.load(record_path(settings))


def stack_running(settings: Settings) -> bool:
    """Whether a ``prelabel up`` on this data directory is running now."""
    return load_record(settings).running()
