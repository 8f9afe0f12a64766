"""Calibrated scores: a per-project, per-model map from the raw score to the probability of being right.

A raw score (the label's probability under the model, see ``distribution.py``) is a ranking
signal, not a probability: small models are over- or under-confident. Once humans have labeled
some of a project's tasks, ``prelabel.quality.calibration_fit`` fits a monotone map on (raw score,
was the pre-annotation right) pairs and stores it in Redis under
``prelabel:calibration:<project>:<model>``. Predictions of that model for that project then
carry the calibrated ``score``; the raw one stays in ``raw_score`` and ``calibration`` names the
map (its id), or says ``uncalibrated`` when no map exists yet (no human labels).

Two map kinds, both monotone (the ranking of tasks by score is kept):

* ``platt``: ``sigmoid(a * logit(p) + b)``, temperature scaling with a bias, for few labels;
* ``isotonic``: a non-decreasing step function (piecewise linear between fitted points), once
  there are enough labels for it not to overfit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from prelabel.contract import Prediction, ProjectRef, calibration_key

UNCALIBRATED = "uncalibrated"
_EPS = 1e-6


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class CalibrationMap:
    method: str  # "platt" | "isotonic"
    model: str
    params: dict[str, Any]
    n: int  # human-labeled predictions it was fitted on
    id: str = ""
    fitted_at: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # ECE/AUROC before and after, see quality

    def __call__(self, p: float) -> float:
        return float(self.apply(np.array([p]))[0])

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            z = self.params["a"] * logit(p) + self.params["b"]
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(p, self.params["x"], self.params["y"])
        raise ValueError(f"unknown calibration method {self.method!r}")

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: str | bytes) -> CalibrationMap:
        return cls(**json.loads(raw))


async def load_calibration(client: Any, project: ProjectRef | None, model: str) -> CalibrationMap | None:
    """The project's map for ``model`` (one Redis GET per request: a refit applies at once)."""
    if client is None or project is None:
        return None
    raw = await client.get(calibration_key(project, model))
    return CalibrationMap.decode(raw) if raw else None


def calibrate(prediction: Prediction, cmap: CalibrationMap | None) -> Prediction:
    """Replace a prediction's score by the calibrated one (in place; returns it).

    Only predictions with regions and a logprob-based score are mapped: the 0.5 fallback of a
    server without logprobs means "unknown", which no map can turn into a probability.
    """
    provenance = prediction.get("meta", {}).get("provenance", {})
    raw = provenance.get("raw_score", prediction.get("score"))
    if cmap is None or not prediction.get("result") or provenance.get("score_source") == "none" or raw is None:
        return prediction
    score = round(min(1.0, max(0.0, cmap(float(raw)))), 6)
    prediction["score"] = score
    provenance.update(raw_score=raw, calibration=cmap.id, calibrated_score=score)
    for region in prediction["result"]:
        region.setdefault("prelabel", {}).update({"raw_score": raw, "calibration": cmap.id})
    return prediction


def is_calibrated(prediction: Prediction) -> bool:
    return prediction.get("meta", {}).get("provenance", {}).get("calibration", UNCALIBRATED) != UNCALIBRATED


__all__ = ["UNCALIBRATED", "CalibrationMap", "calibrate", "is_calibrated", "load_calibration",
           "logit"]
