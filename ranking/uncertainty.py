"""Uncertainty of a label distribution, vectorised over many tasks (rows of a probability matrix).

All three measures are scaled to [0, 1], 1 = most uncertain, so they can be mixed with the other
priority signals and compared across label sets of different sizes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Measure = Literal["least_confidence", "margin", "entropy"]
MEASURES: tuple[Measure, ...] = ("least_confidence", "margin", "entropy")


def _normalised(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise ValueError("probabilities must be a 2-D array (tasks x labels)")
    totals = probs.sum(axis=1, keepdims=True)
    uniform = np.full_like(probs, 1.0 / probs.shape[1])
    return np.where(totals > 0, probs / np.where(totals > 0, totals, 1.0), uniform)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - p(top label), rescaled so a uniform distribution scores 1."""
    p = _normalised(probs)
    k = p.shape[1]
    if k == 1:
        return 1.0 - p[:, 0]
    return (1.0 - p.max(axis=1)) * k / (k - 1)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p(top) - p(second)): small gaps between the two best labels are uncertain."""
    p = _normalised(probs)
    if p.shape[1] == 1:
        return 1.0 - p[:, 0]
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by log(k)."""
    p = _normalised(probs)
    k = p.shape[1]
    if k == 1:
        return np.zeros(p.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return h / np.log(k)


def uncertainty(probs: np.ndarray, measure: Measure = "margin") -> np.ndarray:
    return {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}[measure](probs)


def inclusion_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Uncertainty of multiple-choice answers from per-label inclusion probabilities (rows need
    not sum to 1): the least settled include/leave-out decision, 1 at p = 0.5, 0 at 0 or 1."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError("probabilities must be a 2-D array (tasks x labels)")
    return (1.0 - np.abs(2.0 * p - 1.0)).max(axis=1)
