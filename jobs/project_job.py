"""What every job of one project needs: settings, Redis, the project record, Label Studio."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import redis

from prelabel.contract import ProjectRecord
from prelabel.jobs.projects import load_project
from prelabel.jobs.queue import connection
from prelabel.label_config import guideline_store
from prelabel.prediction.predictor import ContextBuilder, ProjectContext
from prelabel.prediction.service import choose_guideline
from prelabel.settings import Settings, get_settings
from prelabel.studio.access import connect
from prelabel.studio.client import ProjectClient


@dataclass
class ProjectJob:
    """What every job of one project needs: settings, Redis, the project record, Label Studio."""

    settings: Settings
    conn: redis.Redis
    project_id: int
    record: ProjectRecord
    ls: ProjectClient

    @classmethod
    def open(cls, project_id: int, settings: Settings | None = None) -> ProjectJob:
        settings = settings or get_settings()
        conn = connection(settings)
        record = load_project(conn, project_id)
        active = guideline_store.active_guideline(guideline_store.active(conn, project_id))
        record = dataclasses.replace(record, guideline=choose_guideline(None, active, record.guideline))
        sdk = connect(settings, record.hostname, record.access_token)  # AccessRefused: the job fails, said why
        return cls(settings, conn, project_id, record, ProjectClient(sdk, project_id, conn))

    def context(self, label_config: str | None) -> ProjectContext:
        return ContextBuilder(self.settings).context(label_config or self.ls.label_config(), self.record.guideline)
