"""Two LoRA trainings side by side on one machine, at 2 and at 1 torch thread each.

Why the test suite's workers run one thread each (scripts/test.sh): torch's OpenMP threads spin at
every barrier, so two 2-thread processes on 2 cores wait on each other. Each run is
``train.lora.train`` on the exported dataset given (e.g. a flywheel run's ``dataset`` folder) with
the CPU flywheel's settings, 8 steps.

    python benchmarks/thread_oversubscription.py DATASET_DIR [--gguf PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_RUN = """
import json, sys
from prelabel.train.config import LOCAL_TRAIN, TrainConfig
from prelabel.train.lora import train
cfg = TrainConfig.model_validate({"model_name_or_path": sys.argv[1], **LOCAL_TRAIN, "dataset_dir": sys.argv[2],
    "output_dir": sys.argv[3], "max_eval_samples": 17, "precision": "fp32", "max_steps": 8, "eval_steps": 8,
    "save_steps": 8, "logging_steps": 8})
print(json.dumps({"steps": train(cfg).global_step}))
"""


def main() -> None:
    from prelabel.stack.llm_server import find_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--gguf", type=Path, default=None)
    args = parser.parse_args()
    gguf = args.gguf or find_gguf()
    for threads in (2, 1):
        with tempfile.TemporaryDirectory() as scratch:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            started = time.monotonic()
            runs = [subprocess.Popen([sys.executable, "-c", ONE_RUN, str(gguf), str(args.dataset),
                                      str(Path(scratch) / f"run{i}")], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL) for i in range(2)]
            codes = [run.wait() for run in runs]
            print(json.dumps({"threads_each": threads, "runs": 2, "exit_codes": codes,
                              "wall_s": round(time.monotonic() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
