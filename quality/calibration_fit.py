"""Fit, measure and store per-project calibration maps (applied by ``prediction.calibration``).

Data: every task a human labeled that also has an ``ok`` pre-annotation gives one pair (the
pre-annotation's raw score, whether its answer equals the human's). Pairs are kept per model
(the ``model_version`` before ``@``): a map belongs to the model whose scores it maps.

Measures, before and after: expected calibration error (ECE, 10 equal-width bins: the mean gap
between confidence and accuracy, weighted by bin size) and AUROC of the score for "right". The
"after" figures are out-of-fold (5-fold cross-validation), never measured on the pairs a map
was fitted on; the stored map is then fitted on all pairs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from prelabel.contract import STATUS_SEP, ModelVersion, ProjectRef, calibration_key, is_review, stamp_of
from prelabel.label_config.answers import answer_from_regions
from prelabel.label_config.schema import OutputSchema, build_schema
from prelabel.prediction.calibration import CalibrationMap, logit
from prelabel.prediction.project_examples import human_annotation

Method = Literal["auto", "platt", "isotonic"]
MIN_PAIRS = 10  # fewer human-labeled predictions than this: the score stays uncalibrated
ISOTONIC_FROM = 200  # "auto" switches from platt to isotonic at this many pairs
BINS = 10


@dataclass
class Pairs:
    model: str
    scores: list[float]
    correct: list[bool]

    def __len__(self) -> int:
        return len(self.scores)


def canonical_answer(schema: OutputSchema, result: list[dict[str, Any]] | None) -> str | None:
    """An answer's comparable form: lists sorted (span and multi-choice order carries no meaning)."""
    answer = answer_from_regions(schema, result or [])
    if answer is None:
        return None
    normal = {k: sorted(v, key=lambda x: json.dumps(x, sort_keys=True)) if isinstance(v, list) else v
              for k, v in answer.items()}
    return json.dumps(normal, sort_keys=True, ensure_ascii=False)


def _latest_pre(task: dict[str, Any]) -> dict[str, Any] | None:
    pres = [p for p in task.get("predictions") or [] if not is_review(p.get("model_version"))]
    return max(pres, key=lambda p: p.get("id") or 0) if pres else None


def raw_score(prediction: dict[str, Any]) -> float | None:
    """The score before calibration: the regions' ``raw_score`` stamp, else the score itself."""
    for region in prediction.get("result") or []:
        raw = stamp_of(region).get("raw_score")
        if raw is not None:
            return float(raw)
    score = prediction.get("score")
    return float(score) if score is not None else None


def answering_model(prediction: dict[str, Any]) -> str:
    """The model that wrote the prediction: the region stamp's, else ``model_version`` before ``@``."""
    for region in prediction.get("result") or []:
        model = stamp_of(region).get("model")
        if model:
            return str(model)
    return ModelVersion.parse(prediction.get("model_version")).model


def calibration_pairs(tasks: list[dict[str, Any]], schema: OutputSchema) -> dict[str, Pairs]:
    """(raw score, right?) per model over the tasks with a human label and an ``ok`` pre-annotation."""
    out: dict[str, Pairs] = {}
    for task in tasks:
        human = human_annotation(task)
        pre = _latest_pre(task)
        if not human or pre is None or STATUS_SEP in str(pre.get("model_version") or "") or not pre.get("result"):
            continue
        truth, guess, score = canonical_answer(schema, human), canonical_answer(schema, pre["result"]), raw_score(pre)
        if truth is None or score is None:
            continue
        model = answering_model(pre)
        pairs = out.setdefault(model, Pairs(model, [], []))
        pairs.scores.append(score)
        pairs.correct.append(guess == truth)
    return out


# --- measures ----------------------------------------------------------------------------------
def ece(scores: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=float)
    if not len(scores):
        return float("nan")
    index = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - scores[mask].mean())
    return float(total / len(scores))


def auroc(scores: np.ndarray, correct: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    correct = np.asarray(correct, dtype=bool)
    if correct.all() or not correct.any():
        return None
    return float(roc_auc_score(correct, scores))


def reliability(scores: np.ndarray, correct: np.ndarray, bins: int = BINS) -> list[dict[str, float]]:
    """Per non-empty bin: its range, count, mean confidence and accuracy (the diagram's data)."""
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=float)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "n": int((index == b).sum()),
             "confidence": float(scores[index == b].mean()), "accuracy": float(correct[index == b].mean())}
            for b in range(bins) if (index == b).any()]


# --- fitting -----------------------------------------------------------------------------------
def _method(method: Method, n: int) -> str:
    return ("isotonic" if n >= ISOTONIC_FROM else "platt") if method == "auto" else method


def fit_map(scores: np.ndarray, correct: np.ndarray, model: str, method: Method = "auto") -> CalibrationMap:
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    kind = _method(method, len(scores))
    if kind == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=100.0).fit(logit(scores).reshape(-1, 1), correct)
        params: dict[str, Any] = {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    else:
        from sklearn.isotonic import IsotonicRegression

        # Laplace-style bounds: a handful of labels never makes a score certain.
        edge = 1.0 / (len(scores) + 2)
        iso = IsotonicRegression(y_min=edge, y_max=1 - edge, out_of_bounds="clip").fit(scores, correct)
        params = {"x": [float(x) for x in iso.X_thresholds_], "y": [float(y) for y in iso.y_thresholds_]}
    digest = hashlib.sha256(json.dumps([kind, model, params], sort_keys=True).encode()).hexdigest()[:10]
    return CalibrationMap(kind, model, params, len(scores), id=f"cal-{digest}",
                          fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def out_of_fold(scores: np.ndarray, correct: np.ndarray, model: str, method: Method = "auto",
                folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each pair's calibrated score from a map fitted without it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold

    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    folds = min(folds, int(correct.sum()), int((~correct).sum()))
    if folds < 2:
        return scores.copy()
    out = np.empty_like(scores)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(scores.reshape(-1, 1), correct):
        out[test] = fit_map(scores[train], correct[train], model, method).apply(scores[test])
    return out


@dataclass
class CalibrationReport:
    model: str
    n: int
    accuracy: float | None
    status: str  # "calibrated" or "uncalibrated: <why>"
    before: dict[str, Any]
    after: dict[str, Any] | None
    cmap: CalibrationMap | None
    scores: np.ndarray
    calibrated: np.ndarray | None  # out of fold
    correct: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "n": self.n, "accuracy": self.accuracy, "status": self.status,
                "before": self.before, "after": self.after,
                "map": None if self.cmap is None else {"id": self.cmap.id, "method": self.cmap.method,
                                                       "params": self.cmap.params}}


def _measures(scores: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    return {"ece": ece(scores, correct), "auroc": auroc(scores, correct), "mean_score": float(np.mean(scores)),
            "bins": reliability(scores, correct)}


def calibration_report(pairs: Pairs, method: Method = "auto") -> CalibrationReport:
    """Measure the raw score, and when there are enough pairs fit a map and measure it out of fold."""
    scores, correct = np.asarray(pairs.scores, dtype=float), np.asarray(pairs.correct, dtype=bool)
    accuracy = float(correct.mean()) if len(correct) else None
    before = _measures(scores, correct) if len(scores) else {}
    if len(scores) < MIN_PAIRS:
        status = f"uncalibrated: {len(scores)} human-labeled pre-annotations, {MIN_PAIRS} needed"
        return CalibrationReport(pairs.model, len(scores), accuracy, status, before, None, None, scores, None, correct)
    if correct.all() or not correct.any():
        status = "uncalibrated: the pre-annotations were all right or all wrong, nothing to separate"
        return CalibrationReport(pairs.model, len(scores), accuracy, status, before, None, None, scores, None, correct)
    calibrated = out_of_fold(scores, correct, pairs.model, method)
    cmap = fit_map(scores, correct, pairs.model, method)
    after = _measures(calibrated, correct)
    cmap.metrics = {"ece_before": before["ece"], "ece_after": after["ece"], "auroc_before": before["auroc"],
                    "auroc_after": after["auroc"]}
    return CalibrationReport(pairs.model, len(scores), accuracy, "calibrated", before, after, cmap, scores,
                             calibrated, correct)


# --- a live project ----------------------------------------------------------------------------
def project_calibration(client: Any, project_id: int, method: Method = "auto") -> list[CalibrationReport]:
    """Reports for every model that pre-annotated human-labeled tasks of the project."""
    project = client.projects.get(id=project_id)
    config = (project.model_dump() if hasattr(project, "model_dump") else dict(project))["label_config"]
    schema = build_schema(config)
    tasks = [t.model_dump() if hasattr(t, "model_dump") else dict(t)
             for t in client.tasks.list(project=project_id, fields="all")]
    return [calibration_report(pairs, method) for pairs in calibration_pairs(tasks, schema).values()]


def store_maps(conn: Any, project: ProjectRef, reports: list[CalibrationReport]) -> list[str]:
    """Write each fitted map where the backend reads it; a model without one loses a stale map."""
    written = []
    for report in reports:
        key = calibration_key(project, report.model)
        if report.cmap is not None:
            conn.set(key, report.cmap.encode())
            written.append(report.cmap.id)
        else:
            conn.delete(key)
    return written


def refresh_calibration(client: Any, project: ProjectRef, conn: Any) -> str:
    """Refit after new human labels (worker's refresh job)."""
    reports = project_calibration(client, project.id)
    store_maps(conn, project, reports)
    return "; ".join(f"{r.model}: {r.status} (n={r.n})" for r in reports) or "no human-labeled pre-annotations"


def reliability_png(report: CalibrationReport, path: Path, title: str) -> Path:
    """Reliability diagram: accuracy per confidence bin, before (raw) and after (out of fold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("raw score", report.scores, report.before)]
    if report.calibrated is not None and report.after is not None:
        panels.append(("calibrated (out of fold)", report.calibrated, report.after))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    for ax, (name, scores, measures) in zip(axes[0], panels):
        bins = reliability(scores, report.correct)
        centers = [(b["low"] + b["high"]) / 2 for b in bins]
        ax.bar(centers, [b["accuracy"] for b in bins], width=1 / BINS * 0.9, color="#4c72b0", alpha=0.8,
               label="accuracy")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#dd8452",
                label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        for center, b in zip(centers, bins):
            ax.text(center, b["accuracy"] + 0.02, str(b["n"]), ha="center", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        auc = measures.get("auroc")
        ax.set_title(f"{name}: ECE {measures['ece']:.3f}" + (f", AUROC {auc:.3f}" if auc is not None else ""))
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title} ({report.model}, {report.n} human labels; {report.status})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
