#!/usr/bin/env python
"""Precision and recall of the export's PII detection on a labelled sample.

Data: ``benchmarks/datasets/pii_sample.jsonl``, one text a line with its personal strings and their
kind (``{"text": ..., "pii": [{"text": ..., "kind": "NAME"}]}``): names, street addresses,
e-mails, phones, IPs, birth dates, cards, IBANs and SSNs, and texts without any (flight dates and
times, order and tracking numbers, ISBNs, company hotlines, version numbers, public figures).

A finding is correct when it overlaps a labelled string of the same kind; a labelled string is
found when a finding of its kind overlaps it. No server is needed.

    python benchmarks/pii_eval.py [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prelabel.export.pii import detect

SAMPLE = Path(__file__).resolve().parent / "datasets" / "pii_sample.jsonl"


def evaluate(path: Path = SAMPLE) -> dict[str, object]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    misses: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = row["text"]
        gold = [(text.index(p["text"]), text.index(p["text"]) + len(p["text"]), p["kind"]) for p in row["pii"]]
        found = detect(text)
        for f in found:
            hit = any(f.kind == k and f.start < e and s < f.end for s, e, k in gold)
            (tp if hit else fp)[f.kind] += 1
            if not hit:
                misses.append(f"false positive {f.kind}: {text[f.start:f.end]!r} in {text!r}")
        for s, e, k in gold:
            if not any(f.kind == k and f.start < e and s < f.end for f in found):
                fn[k] += 1
                misses.append(f"missed {k}: {text[s:e]!r} in {text!r}")
    kinds = sorted(set(tp) | set(fp) | set(fn))

    def pr(t: int, p: int, n: int) -> dict[str, float | int]:
        return {"precision": round(t / (t + p), 3) if t + p else 1.0, "recall": round(t / (t + n), 3) if t + n else 1.0,
                "tp": t, "fp": p, "fn": n}

    return {"overall": pr(sum(tp.values()), sum(fp.values()), sum(fn.values())),
            "per_kind": {k: pr(tp[k], fp[k], fn[k]) for k in kinds}, "errors": misses,
            "texts": sum(1 for _ in path.open(encoding="utf-8"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    result = evaluate()
    overall = result["overall"]
    print(f"PII detection on {result['texts']} labelled texts ({SAMPLE.name})")
    print(f"overall: precision {overall['precision']:.3f}  recall {overall['recall']:.3f}  "
          f"(tp {overall['tp']}, fp {overall['fp']}, fn {overall['fn']})")
    for kind, row in result["per_kind"].items():
        print(f"  {kind:<11} precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
              f"(tp {row['tp']}, fp {row['fp']}, fn {row['fn']})")
    for error in result["errors"]:
        print(f"  - {error}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
