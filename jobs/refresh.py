"""Refreshing a project after its labels or predictions changed: the supervised stage, the
ranking of its queue, per-class agreement and the score's calibration (debounced: one pending
refresh per project)."""

from __future__ import annotations

from typing import Any

from prelabel.contract import ProjectRef
from prelabel.jobs.project_job import ProjectJob
from prelabel.jobs.queue import enqueue_once
from prelabel.jobs.stage_eval import refresh_stages
from prelabel.quality.calibration_fit import refresh_calibration
from prelabel.quality.project import refresh_quality
from prelabel.ranking.project import refresh_ranking


def queue_refresh(job: ProjectJob) -> None:
    enqueue_once(job.conn, job.settings, refresh_project, job.ref,
                 job_id=f"refresh-{job.ref.slug}", description="refresh ranking and quality")


def refresh_project(project: ProjectRef | int) -> dict[str, Any]:
    """Refit and score the supervised stage, re-rank the project's queue with it, recompute
    per-class agreement, refit the score's calibration."""
    job = ProjectJob.open(project)
    stages = refresh_stages(job.ls.sdk, job.ref, job.conn, job.settings.stage_min_accuracy)
    ranking = refresh_ranking(job.ls.sdk, job.ref, job.conn, model=stages.ranking_model)
    quality = refresh_quality(job.ls.sdk, job.ref, job.conn)
    calibration = refresh_calibration(job.ls.sdk, job.ref, job.conn)
    return {"stages": stages.summary, "ranking": str(ranking), "quality": str(quality), "calibration": calibration}
