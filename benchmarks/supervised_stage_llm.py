"""The LLM stage's accuracy on a capped sample of a supervised_stage.py test set, measured through
the real llama.cpp server (packaged SmolLM2-135M) with ``prelabel predict`` (default settings).

Slow on 2 shared CPU cores, hence the cap (default 50 tasks, the first of the test set):

    python benchmarks/supervised_stage_llm.py spamassassin 50 > benchmarks/results/supervised_stage_llm_spam.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from supervised_stage import DATASETS, control_for, load

from prelabel.stack.llm_server import start_llm_server


def main(name: str, cap: int) -> int:
    path, column, _ = DATASETS[name]
    texts, labels = load(path, column)
    control = control_for(sorted(set(labels)))
    choices = "".join(f'<Choice value="{label}"/>' for label in control.label_values)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config.xml").write_text(f'<View><Text name="text" value="$text"/><Choices name="label" '
                                         f'toName="text" choice="single">{choices}</Choices></View>')
        (work / "tasks.jsonl").write_text("".join(json.dumps({"id": i, "data": {"text": t}}) + "\n"
                                                  for i, t in enumerate(texts[:cap])))
        server = start_llm_server(work / "llm")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PRELABEL_", "OPENAI_", "REDIS_"))}
            env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=server.api_key,
                       PRELABEL_LLM_MODEL=server.model, PRELABEL_DATA_DIR=str(work / "data"),
                       PRELABEL_STRUCTURED_OUTPUT=server.structured_output or "",
                       PRELABEL_LLM_CONTEXT_WINDOW=str(server.context_window or 2048))
            started = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "prelabel"), "predict", "-c", str(work / "config.xml"),
                            "-t", str(work / "tasks.jsonl"), "-o", str(work / "out.jsonl")],
                           env=env, cwd=work, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elapsed = time.perf_counter() - started
        finally:
            if server.process is not None:
                server.process.stop()
        rows = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines() if line.strip()]
    right = 0
    for i, row in enumerate(rows):
        predictions = row.get("predictions") or [row]
        chosen = [r["value"]["choices"][0] for r in predictions[0].get("result", [])
                  if r.get("value", {}).get("choices")]
        right += bool(chosen) and chosen[0] == labels[i]
    print(f"{name}: LLM stage (SmolLM2-135M, zero-shot, llama.cpp, `prelabel predict`) on the first {len(rows)} "
          f"test tasks: {right}/{len(rows)} = {right / max(1, len(rows)):.1%} right, {elapsed:.0f} s "
          f"({elapsed / max(1, len(rows)):.1f} s/task)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50))
