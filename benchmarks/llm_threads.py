"""The local stack's two llama.cpp servers (SmolLM2 pre-annotator, Gemma 3 270M reviewer) at 2 and
at 1 thread each: one busy alone, and both busy at once.

What `prelabel up` should default to on a small machine (``PRELABEL_LLM_THREADS``): llama.cpp's
threads wait for each other at every barrier, so two 2-thread servers busy on 2 cores may slow
each other down more than they gain when only one of them is busy.

    python benchmarks/llm_threads.py [--requests 8] [--threads 2 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

PROMPT = ("Classify the search query into one intent: navigational, informational, transactional, "
          "commercial, local, other. " * 30) + "\nQuery: buy running shoes online\nIntent:"


def ask(base_url: str, model: str, n: int, tag: str) -> float:
    """Seconds for ``n`` completions one after another (a ~600-token prompt, 12 answer tokens).
    Each prompt starts differently, so no request reuses another's cached prompt."""
    started = time.perf_counter()
    with httpx.Client(timeout=600) as http:
        for i in range(n):
            response = http.post(f"{base_url}/completions", json={
                "model": model, "prompt": f"Request {tag}-{i}. {PROMPT}", "max_tokens": 12, "temperature": 0,
                "logprobs": 1})
            response.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    from prelabel.stack.llm_server import REVIEWER_ALIAS, find_reviewer_gguf, start_llm_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = parser.parse_args()
    reviewer_gguf = find_reviewer_gguf()
    assert reviewer_gguf is not None, "the Gemma reviewer GGUF is not provisioned (scripts/provision.sh)"
    print(f"# {os.cpu_count()} cores; {args.requests} requests per server; prompt ~600 tokens, 12 answer tokens")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            os.environ["PRELABEL_LLM_THREADS"] = str(threads)
            llm = start_llm_server(Path(tmp) / f"llm-{threads}")
            reviewer = start_llm_server(Path(tmp) / f"rev-{threads}", gguf=reviewer_gguf, alias=REVIEWER_ALIAS)
            try:
                alone = {name: ask(server.base_url, server.model, args.requests, "alone")
                         for name, server in (("smollm2", llm), ("gemma", reviewer))}
                started = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    both = dict(zip(("smollm2", "gemma"), pool.map(
                        lambda s: ask(s.base_url, s.model, args.requests, "both"), (llm, reviewer)), strict=True))
                pair_wall = time.perf_counter() - started
            finally:
                for server in (llm, reviewer):
                    if server.process is not None:
                        server.process.stop()
            print(f"threads {threads} each: alone smollm2 {alone['smollm2']:.1f} s, gemma {alone['gemma']:.1f} s; "
                  f"both busy: smollm2 {both['smollm2']:.1f} s, gemma {both['gemma']:.1f} s, "
                  f"pair wall {pair_wall:.1f} s")


if __name__ == "__main__":
    main()
