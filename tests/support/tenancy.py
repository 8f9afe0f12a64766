"""Projects as a backend keys them in Redis: its configured Label Studio's tenant plus the id."""

from __future__ import annotations

from prelabel.contract import ProjectRef
from prelabel.settings import Settings
from prelabel.studio.tenancy import configured


def project_ref(ls_url: str | None, pid: int | str) -> ProjectRef:
    """Project ``pid`` of a backend (or worker, or command) whose ``LABEL_STUDIO_URL`` is ``ls_url``."""
    return configured(Settings(_env_file=None, label_studio_url=ls_url), pid)
