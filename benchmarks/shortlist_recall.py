#!/usr/bin/env python
"""How often the gold label is among the shortlisted candidates, on a labeled set with 77 labels.

The backend shortlists the labels of a Choices control with more than ``PRELABEL_SHORTLIST_ABOVE``
labels (``prediction/shortlist.py``) and the model chooses among the ``k`` candidates plus
``none_of_these``. A gold label missing from the shortlist can never be predicted (at best the
model says "none of these" and a human labels the task), so this rate bounds the accuracy the
shortlist allows.

Data: BANKING77 (``benchmarks/datasets/banking77``): the 3,080 test queries; the labels' documents
are their names, plus (second setting) 5 human-labeled train queries per label, what a project
has after a few hundred annotations. No server is needed.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/shortlist_recall.py [--json-out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prelabel.label_config.guideline import default_guideline
from prelabel.label_config.schema import build_schema
from prelabel.prediction.prompt import Example
from prelabel.prediction.shortlist import Shortlister

DATA = Path(__file__).resolve().parent / "datasets" / "banking77"
KS = (5, 10, 15, 20)


def rows(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(encoding="utf-8") as handle:
        return [(r["text"], r["category"]) for r in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    schema = build_schema((DATA / "config.xml").read_text())
    control = schema.fields[0]
    guideline = default_guideline(schema)
    test = rows("test.csv")
    human = [Example({"text": text}, {control.name: label}, "train") for text, label in rows("train_sample.csv")]
    results: dict[str, dict[str, float]] = {}
    for setting, examples in (("label names only", []), ("names + 5 labeled examples per label", human)):
        shortlister = Shortlister(control, guideline, examples, max(KS))
        started = time.perf_counter()
        ranked = [shortlister.candidates(text) for text, _ in test]
        per_task_ms = (time.perf_counter() - started) / len(test) * 1000
        results[setting] = {f"k={k}": round(sum(gold in r[:k] for r, (_, gold) in zip(ranked, test)) / len(test), 4)
                            for k in KS}
        results[setting]["ms_per_task"] = round(per_task_ms, 3)
    print(f"BANKING77 test split: {len(test)} queries, {len(control.labels)} labels; gold label in the shortlist:")
    print(f"{'documents':<40}" + "".join(f"{'k=' + str(k):>8}" for k in KS) + f"{'ms/task':>9}")
    for setting, rates in results.items():
        print(f"{setting:<40}" + "".join(f"{rates[f'k={k}']:>8.1%}" for k in KS) + f"{rates['ms_per_task']:>9.2f}")
    out = {"dataset": "banking77 test", "tasks": len(test), "labels": len(control.labels), "recall": results}
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
