"""Two guideline versions of a shipped template judged on its samples with ``prelabel prompts eval``.

Starts a private Label Studio 1.23.2 and the local llama.cpp server (SmolLM2-135M) from the
virtualenvs ``scripts/provision.sh`` made, creates a project from the template's config and sample
tasks, enters the human labels of ``--labels`` as annotations (a person labeled them by the
guideline), and runs::

    prelabel prompts eval --project P --guideline <candidate> --out <out>

which compares the project's current version (the shipped guideline) with the candidate on those
human-verified tasks. The table goes to stdout; report.json, report.md and the confusion PNGs
to ``--out``. Everything it started is stopped on exit.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/prompt_versions.py            # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prelabel.stack.label_studio import start_label_studio
from prelabel.stack.llm_server import start_llm_server
from tests.servers import dev_bin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default="search_intent")
    parser.add_argument("--labels", type=Path, default=ROOT / "benchmarks/prompts/search_intent.sample.labels.jsonl",
                        help="JSONL of {text, label}: the human label of each sample task")
    parser.add_argument("--candidate", default=str(ROOT / "benchmarks/prompts/search_intent_minimal.yaml"))
    parser.add_argument("--control", default="intent", help="the Choices control the labels are for")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prompt_versions")
    args = parser.parse_args()

    config = (ROOT / "label_config/templates" / f"{args.template}.xml").read_text()
    labels = [json.loads(line) for line in args.labels.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="prelabel-prompts-") as tmp:
        work = Path(tmp)
        print("[bench] starting Label Studio and the LLM server ...", file=sys.stderr, flush=True)
        ls = start_label_studio(work / "ls")
        llm = start_llm_server(work / "llm")
        try:
            client = ls.sdk()
            project = client.projects.create(title=f"{args.template} samples", label_config=config)
            ids = client.projects.import_tasks(id=project.id, request=[{"text": row["text"]} for row in labels],
                                               return_task_ids=True).task_ids
            for task_id, row in zip(ids, labels):
                client.annotations.create(id=task_id, result=[{
                    "from_name": args.control, "to_name": "text", "type": "choices",
                    "value": {"choices": [row["label"]]}}])
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PRELABEL_", "OPENAI_", "LABEL_STUDIO_")) and k != "REDIS_URL"}
            env.update(LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.api_key, OPENAI_BASE_URL=llm.base_url,
                       OPENAI_API_KEY=llm.api_key, PRELABEL_LLM_MODEL=llm.model,
                       PRELABEL_STRUCTURED_OUTPUT=llm.structured_output, PRELABEL_DATA_DIR=str(work / "data"))
            command = [dev_bin("prelabel"), "prompts", "eval", "--project", str(project.id),
                       "--guideline", args.candidate, "--out", str(args.out)]
            print("[bench] $ " + " ".join(command[1:]), file=sys.stderr, flush=True)
            return subprocess.run(command, env=env, cwd=ROOT, check=False).returncode
        finally:
            llm.process.stop()
            ls.process.stop()


if __name__ == "__main__":
    sys.exit(main())
