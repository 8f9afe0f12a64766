"""Wall-clock time of many concurrent calls to the fault-injecting LLM server (tests/support/fault_llm.py).

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/fault_llm_concurrency.py [--latency-ms 200]

The test (tests/integration/test_fault_llm.py::test_concurrent_calls_overlap) checks that the
server holds every call at once, counted by the server; how long a burst takes depends on how
busy the machine is, so the figure lives here. 64 and 300 calls of ``--latency-ms`` each, sent at
once over one ``openai.AsyncOpenAI`` client, after one warm-up call. Reference on a quiet 2-core
machine: both bursts finish within a few hundred ms of one latency (64 calls < 0.8 s, 300 < 3 s at 200 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.fault_llm import FaultServer, running_fault_server

SCHEMA = {"type": "object", "properties": {"intent": {"type": "string", "enum": ["a", "b"]}},
          "required": ["intent"], "additionalProperties": False}


async def burst(server: FaultServer, n: int) -> float:
    """Seconds for ``n`` concurrent schema-constrained completions, after a warm-up call."""
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="bench", max_retries=0, timeout=60) as client:

        async def call(i: int) -> None:
            await client.chat.completions.create(model=server.model, response_format=fmt,  # type: ignore[call-overload]
                                                 messages=[{"role": "user", "content": f"query {i}"}])

        await call(-1)
        started = time.perf_counter()
        await asyncio.gather(*[call(i) for i in range(n)])
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=200)
    args = parser.parse_args()
    rows = []
    with running_fault_server(latency_ms=args.latency_ms) as server:
        for n in (64, 300):
            server.reset()
            elapsed = asyncio.run(burst(server, n))
            rows.append({"calls": n, "latency_ms": args.latency_ms, "elapsed_s": round(elapsed, 3),
                         "in_flight_max": server.stats()["in_flight_max"]})
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
