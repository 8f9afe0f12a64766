"""What every job of one project needs: settings, Redis, the project record, Label Studio."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import redis

from prelabel.contract import ProjectRecord, ProjectRef
from prelabel.jobs.projects import load_project
from prelabel.jobs.queue import connection
from prelabel.label_config import guideline_store
from prelabel.prediction.predictor import ContextBuilder, ProjectContext
from prelabel.prediction.service import choose_guideline
from prelabel.settings import Settings, get_settings
from prelabel.studio.client import ProjectClient
from prelabel.studio.tenancy import access_for, as_ref


@dataclass
class ProjectJob:
    """What every job of one project needs: settings, Redis, the project record, Label Studio."""

    settings: Settings
    conn: redis.Redis
    ref: ProjectRef  # the project's Redis keys (its Label Studio and id)
    record: ProjectRecord
    ls: ProjectClient

    @property
    def project_id(self) -> int:
        """The project's id in its Label Studio."""
        return self.ref.id

    @classmethod
    def open(cls, project: ProjectRef | int, settings: Settings | None = None) -> ProjectJob:
        """``project``: a reference, or a bare id (a job queued before tenancy: the configured LS's)."""
        settings = settings or get_settings()
        ref = as_ref(settings, project)
        conn = connection(settings)
        record = load_project(conn, ref)
        active = guideline_store.active_guideline(guideline_store.active(conn, ref))
        record = dataclasses.replace(record, guideline=choose_guideline(None, active, record.guideline))
        # never another Label Studio than the project's: AccessRefused fails the job, said why
        sdk = access_for(settings, ref, record.hostname, record.access_token).client()
        return cls(settings, conn, ref, record, ProjectClient(sdk, ref, conn))

    def context(self, label_config: str | None) -> ProjectContext:
        return ContextBuilder(self.settings).context(label_config or self.ls.label_config(), self.record.guideline)
