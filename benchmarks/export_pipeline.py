"""Export + clean + split of synthetic Label Studio tasks from a local file: time and peak memory.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/export_pipeline.py [--sizes 10000,100000]

For each size, writes a JSONL file of Label Studio-shaped tasks (search intent, one human
annotation each, a prediction, some duplicates and PII), then runs ``prelabel export --from-file``
in a fresh process and reports wall time and that process's peak RSS. Streaming means the peak
must not grow with the project (target: < 1 GB at 100k).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["navigational", "informational", "transactional", "entertainment", "educational", "other"]
WORDS = [f"w{i}" for i in range(20000)]


def write_tasks(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(12))
            if i % 50 == 0:
                text += " mail me at someone@example.com"
            if i % 97 == 0 and i:
                text = f"duplicate query {i // 97 % 10}"
            label = rng.choice(LABELS)
            task = {"id": i + 1, "data": {"text": text},
                    "annotations": [{"id": i + 1, "completed_by": 1 + i % 5, "was_cancelled": False,
                                     "result": [{"from_name": "intent", "to_name": "text", "type": "choices",
                                                 "value": {"choices": [label]}}]}],
                    "predictions": [{"model_version": "smollm2@p-1", "result": []}]}
            handle.write(json.dumps(task) + "\n")


def run(size: int, work: Path) -> dict:
    source = work / f"tasks-{size}.jsonl"
    write_tasks(source, size)
    out = work / f"ds-{size}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("prelabel")), "export", "--from-file", str(source),
                    "--config", str(ROOT / "label_config" / "templates" / "search_intent.xml"), "-g", "search_intent",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = json.loads((out / "manifest.json").read_text())
    return {"tasks": size, "wall_s": round(wall, 1), "tasks_per_s": round(size / wall),
            "peak_rss_mb": round(max(peak_kb, before) / 1024, 1),
            "rows": manifest["counts"]["written_rows"], "counts": manifest["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prelabel-export-bench-") as tmp:
        results = [run(int(n), Path(tmp)) for n in args.sizes.split(",")]
    for r in results:
        print(f"{r['tasks']:>7} tasks: {r['wall_s']:6.1f} s ({r['tasks_per_s']} tasks/s), "
              f"peak RSS {r['peak_rss_mb']} MB, {r['rows']} rows written")
    small, big = results[0], results[-1]
    print(f"peak memory x{big['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
          f"for x{big['tasks'] / small['tasks']:.0f} tasks; "
          f"target < 1024 MB: {'PASS' if big['peak_rss_mb'] < 1024 else 'FAIL'}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
