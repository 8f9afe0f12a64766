"""Annotator screening (the InstructGPT labeler-selection practice): who labels like the reference?

Per annotator, over a project's non-cancelled annotations:

* ``tasks``: tasks they labeled;
* ``reference``: agreement with the reference answer of a task: a ground-truth annotation by
  someone else (Label Studio's *ground truth* flag), which is what the qualification set carries;
  ground truths by others that disagree with each other give the task no reference;
* ``majority``: agreement with the majority of the *other* annotators of the same task (ties and
  tasks nobody else labeled do not count);
* ``per_class``: accuracy per reference class (the first Choices control; the majority label when
  a task has no reference);
* ``ranking``: for List + Ranker configs, the share of item pairs they order like the reference
  (or the majority) ranking: 1 = same order, 0.5 = unrelated, 0 = reversed;
* ``flags``: under the agreement ``bar`` (reference when it has any, else majority), or fewer than
  ``min_tasks`` tasks compared.

Qualification mode: a reference set (``{"data", "answer"}`` JSONL) is imported as tasks marked
``data.prelabel_reference`` with a ground-truth annotation each; scoring with ``qualification``
counts only those tasks, and an annotator qualifies with agreement >= bar on at least
``min_tasks`` of them.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prelabel.contract import REFERENCE_FIELD
from prelabel.label_config.schema import OutputSchema
from prelabel.quality.calibration_fit import canonical_answer


def annotator_of(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id"))
    return str(annotation.get("created_username") or who) if who is not None else "unknown"


def _ranking(schema: OutputSchema, result: list[dict[str, Any]]) -> list[Any] | None:
    for control in schema.fields:
        if control.tag == "Ranker":
            order = control.from_regions(result)
            if isinstance(order, list):
                return order
    return None


def _first_choice(schema: OutputSchema, result: list[dict[str, Any]]) -> str | None:
    for control in schema.fields:
        if control.tag == "Choices":
            value = control.from_regions(result)
            if isinstance(value, list):
                return ",".join(sorted(value)) if value else None
            return value
    return None


def pair_agreement(a: list[Any], b: list[Any]) -> float | None:
    """Share of item pairs that two rankings order the same way (items both rank)."""
    pos_a, pos_b = {x: i for i, x in enumerate(a)}, {x: i for i, x in enumerate(b)}
    common = [x for x in a if x in pos_b]
    pairs = list(itertools.combinations(common, 2))
    if not pairs:
        return None
    same = sum((pos_a[x] < pos_a[y]) == (pos_b[x] < pos_b[y]) for x, y in pairs)
    return same / len(pairs)


@dataclass
class AnnotatorStats:
    annotator: str
    tasks: int = 0
    reference_n: int = 0
    reference_agreed: int = 0
    majority_n: int = 0
    majority_agreed: int = 0
    per_class: dict[str, list[int]] = field(default_factory=dict)  # class -> [agreed, n]
    ranking: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def reference(self) -> float | None:
        return self.reference_agreed / self.reference_n if self.reference_n else None

    @property
    def majority(self) -> float | None:
        return self.majority_agreed / self.majority_n if self.majority_n else None

    @property
    def ranking_agreement(self) -> float | None:
        return sum(self.ranking) / len(self.ranking) if self.ranking else None

    @property
    def agreement(self) -> float | None:
        """The figure flags and qualification use: reference when there is any, else majority."""
        return self.reference if self.reference_n else self.majority

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(reference=self.reference, majority=self.majority, ranking=self.ranking_agreement,
                   agreement=self.agreement,
                   per_class={k: {"agreed": a, "n": n, "accuracy": a / n if n else None}
                              for k, (a, n) in sorted(self.per_class.items())})
        return out


@dataclass
class ScreeningReport:
    annotators: list[AnnotatorStats]
    bar: float
    min_tasks: int
    qualification: bool
    classes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"bar": self.bar, "min_tasks": self.min_tasks, "qualification": self.qualification,
                "classes": self.classes, "annotators": [a.as_dict() for a in self.annotators]}


def screen(tasks: list[dict[str, Any]], schema: OutputSchema, bar: float = 0.8, min_tasks: int = 5,
           qualification: bool = False) -> ScreeningReport:
    """Screening statistics over Label Studio task records (``tasks.list(fields="all")``)."""
    stats: dict[str, AnnotatorStats] = {}
    classes: set[str] = set()
    for task in tasks:
        if qualification and not (task.get("data") or {}).get(REFERENCE_FIELD):
            continue
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled") and a.get("result")]
        if not annotations:
            continue
        answers = {id(a): canonical_answer(schema, a["result"]) for a in annotations}
        truths = [a for a in annotations if a.get("ground_truth")]
        for annotation in annotations:
            who = annotator_of(annotation)
            s = stats.setdefault(who, AnnotatorStats(who))
            s.tasks += 1
            mine = answers[id(annotation)]
            # The reference: the ground truth of someone else; several that disagree are none.
            references = {answers[id(t)]: t for t in truths if annotator_of(t) != who and answers[id(t)] is not None}
            reference = next(iter(references.values())) if len(references) == 1 else None
            others = [answers[id(a)] for a in annotations if annotator_of(a) != who and answers[id(a)] is not None]
            top = Counter(others).most_common(2)
            majority = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None
            target = None
            if reference is not None:
                s.reference_n += 1
                s.reference_agreed += mine == answers[id(reference)]
                target = reference["result"]
            if majority is not None:
                s.majority_n += 1
                s.majority_agreed += mine == majority
                if target is None:
                    target = next(a["result"] for a in annotations if answers[id(a)] == majority
                                  and annotator_of(a) != who)
            if target is None:
                continue
            label = _first_choice(schema, target)
            if label is not None:
                classes.add(label)
                cell = s.per_class.setdefault(label, [0, 0])
                cell[0] += _first_choice(schema, annotation["result"]) == label
                cell[1] += 1
            order, ref_order = _ranking(schema, annotation["result"]), _ranking(schema, target)
            if order is not None and ref_order is not None:
                agreement = pair_agreement(order, ref_order)
                if agreement is not None:
                    s.ranking.append(agreement)
    for s in stats.values():
        compared = s.reference_n if s.reference_n else s.majority_n
        if compared < min_tasks:
            s.flags.append(f"only {compared} tasks compared (< {min_tasks})")
        if s.agreement is not None and s.agreement < bar:
            s.flags.append(f"agreement {s.agreement:.0%} < {bar:.0%}")
        if qualification and not s.flags:
            s.flags.append("qualified")
    return ScreeningReport(sorted(stats.values(), key=lambda s: s.annotator), bar, min_tasks, qualification,
                           sorted(classes))


def reference_tasks(path: Path, schema: OutputSchema, set_name: str) -> list[dict[str, Any]]:
    """Label Studio import records for a reference set: each task with its ground-truth answer."""
    from prelabel.label_config.answers import check_answer

    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        data = {**item["data"], REFERENCE_FIELD: set_name}
        checked = check_answer(schema, [], item["answer"], schema.object_texts(data))
        if checked.errors:
            raise ValueError(f"{path}:{number}: reference answer does not fit the config: "
                             + "; ".join(str(e) for e in checked.errors.values()))
        records.append({"data": data, "result": [r for rs in checked.regions.values() for r in rs]})
    return records


def screening_png(report: ScreeningReport, path: Path, title: str) -> Path:
    """Agreement per annotator (reference, majority, ranking) and accuracy per class (heatmap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [a.annotator for a in report.annotators]
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.6 * len(names) + 2)))
    y = np.arange(len(names))
    for offset, (label, values) in zip((-0.25, 0, 0.25), (
            ("reference", [a.reference for a in report.annotators]),
            ("majority", [a.majority for a in report.annotators]),
            ("ranking pairs", [a.ranking_agreement for a in report.annotators]))):
        bars.barh(y + offset, [v if v is not None else 0 for v in values], height=0.25, label=label)
    bars.axvline(report.bar, color="red", linestyle="--", label=f"bar {report.bar:.0%}")
    bars.set_yticks(y, labels=[f"{a.annotator} ({a.tasks})" for a in report.annotators])
    bars.set_xlim(0, 1)
    bars.set_xlabel("agreement")
    bars.legend(fontsize=8)
    classes = report.classes or ["-"]
    grid = np.full((len(names), len(classes)), np.nan)
    for i, a in enumerate(report.annotators):
        for j, c in enumerate(classes):
            agreed, n = a.per_class.get(c, (0, 0))
            if n:
                grid[i, j] = agreed / n
    image = heat.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    heat.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    heat.set_yticks(range(len(names)), labels=names)
    heat.set_title("accuracy per reference class")
    fig.colorbar(image, ax=heat, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["REFERENCE_FIELD", "AnnotatorStats", "ScreeningReport", "annotator_of", "pair_agreement",
           "reference_tasks", "screen", "screening_png"]
