"""Quality control on a live Label Studio project: agreement stats and spot-check tagging."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from prelabel.contract import ProjectRef, quality_key
from prelabel.quality.agreement import AgreementReport, agreement
from prelabel.quality.spotcheck import Sample, sample
from prelabel.ranking.project import project_signals
from prelabel.studio.task_fields import update_task_fields

SPOTCHECK_FIELD = "prelabel_spotcheck"


def project_agreement(client: Any, project_id: int, bar: float = 0.9) -> AgreementReport:
    signals, labels, _ = project_signals(client, project_id)
    return agreement(signals, labels, bar)


def refresh_quality(client: Any, project: ProjectRef, conn: redis.Redis, bar: float = 0.9) -> str:
    """Recompute agreement (after each human label) and keep it for ``prelabel quality``/metrics."""
    report = project_agreement(client, project.id, bar)
    conn.set(quality_key(project), json.dumps({**report.as_dict(), "time": time.time()}))
    flagged = ", ".join(c.label for c in report.flagged) or "none"
    return f"{report.compared} compared, overall {report.overall}, under the bar: {flagged}"


def spotcheck_project(client: Any, project: ProjectRef, n: int = 150, abnormal_share: float = 0.6,
                      seed: int = 0, conn: redis.Redis | None = None) -> tuple[str, Sample]:
    """Sample tasks and tag them ``data.prelabel_spotcheck = <batch id>`` (filterable in the DM)."""
    signals, _, tasks = project_signals(client, project.id)
    chosen = sample(signals, n, abnormal_share, seed)
    batch = time.strftime("spot-%Y%m%d-%H%M%S", time.gmtime())
    by_id = {t["id"]: t for t in tasks}
    for task_id in chosen.ids:
        update_task_fields(client, project, by_id[task_id], {SPOTCHECK_FIELD: batch}, conn)
    return batch, chosen
