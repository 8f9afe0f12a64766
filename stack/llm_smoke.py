"""Does an OpenAI-compatible server really answer? A chat completion, not a model list.

A server can list its models and still die on its first completion (a llama.cpp build that uses
CPU instructions the machine advertises but does not allow crashes inside its matrix kernels).
So readiness here means one real chat completion with the two features the backend relies on:
the JSON answer constrained by a schema, and token logprobs.

This module uses the standard library only: ``scripts/provision.sh`` runs it with the llama
venv's Python (which has no prelabel installed) to check a fresh build before marking it
complete; ``prelabel up`` and the test harness import it to judge readiness the same way.

    python stack/llm_smoke.py --python VENV/bin/python --model FILE.gguf --log LOG
        start ``llama_cpp.server`` on a free port, check one completion, stop it; exit 0 / 1
    python stack/llm_smoke.py --base-url http://127.0.0.1:8000/v1
        check an already running server
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["sentiment"],
}
MESSAGES = [
    {"role": "system", "content": 'Classify the sentiment. Answer with JSON: {"sentiment": "positive" or "negative"}.'},
    {"role": "user", "content": "I love this product, it works great!"},
]


class NotReady(RuntimeError):
    """The server did not give a real answer; the message says what it did instead.

    Not a ``PrelabelError``: this module runs where prelabel is not installed (see above)."""


def _post(url: str, body: dict, api_key: str, timeout: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def check_completion(
    base_url: str, model: str = "smollm2", *, api_key: str = "sk-no-key-needed", timeout: float = 60.0,
    structured_output: str | None = "json_object", logprobs: bool = True,
) -> str:
    """One chat completion with a schema-constrained JSON answer and logprobs.

    Returns a one-line summary; raises ``NotReady`` with the reason when the server errs,
    drops the connection (a crash), or answers something the backend could not use.
    """
    body: dict = {"model": model, "messages": MESSAGES, "temperature": 0.0, "max_tokens": 16}
    if structured_output == "json_object":
        body["response_format"] = {"type": "json_object", "schema": SCHEMA}
    elif structured_output == "json_schema":
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    if logprobs:
        body |= {"logprobs": True, "top_logprobs": 2}
    started = time.monotonic()
    try:
        data = _post(base_url.rstrip("/") + "/chat/completions", body, api_key, timeout)
    except urllib.error.HTTPError as exc:
        raise NotReady(f"HTTP {exc.code} on a chat completion: {exc.read()[:200].decode(errors='replace')}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotReady(f"no answer to a chat completion ({type(reason).__name__}: {reason})") from None
    except ValueError:
        raise NotReady("a chat completion answered with a body that is not JSON") from None
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise NotReady(f"a chat completion without a message: {str(data)[:200]}") from None
    if structured_output:
        try:
            answer = json.loads(content)
        except (TypeError, ValueError):
            raise NotReady(f"the constrained answer is not JSON: {str(content)[:120]!r}") from None
        if not isinstance(answer, dict) or answer.get("sentiment") not in ("positive", "negative"):
            raise NotReady(f"the constrained answer ignores its schema: {str(content)[:120]!r}")
    if logprobs:
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        if not tokens or not all(isinstance(t.get("logprob"), (int, float)) for t in tokens):
            raise NotReady("the answer carries no token logprobs")
    return f"answered {content.strip()!r} with {len(tokens) if logprobs else 0} logprob tokens in " \
           f"{time.monotonic() - started:.1f} s"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_models(base_url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotReady(f"the server stopped during start-up ({exit_text(proc.returncode)})")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.5)
    raise NotReady(f"/v1/models did not answer within {timeout:.0f} s")


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def smoke_server(python: str, model: Path, log: Path, *, start_timeout: float = 180.0) -> str:
    """Start ``llama_cpp.server`` from ``python`` on a free port, check one completion, stop it."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [python, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
             "--model_alias", "smollm2", "--n_ctx", "512", "--verbose", "False"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_models(base_url, proc, start_timeout)
        try:
            summary = check_completion(base_url)
        except NotReady as exc:
            time.sleep(0.5)  # let a crashed server be reaped, so the reason names the signal
            if proc.poll() is not None:
                raise NotReady(f"the server died on its first chat completion ({exit_text(proc.returncode)})") from None
            raise exc from None
        return summary
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="check a running server (…/v1)")
    parser.add_argument("--python", help="start llama_cpp.server with this interpreter")
    parser.add_argument("--model", type=Path, help="GGUF file for --python")
    parser.add_argument("--log", type=Path, help="server log for --python")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    try:
        if args.base_url:
            print(f"ok: {check_completion(args.base_url, timeout=args.timeout)}")
        else:
            if not (args.python and args.model and args.log):
                parser.error("--python, --model and --log go together")
            print(f"ok: {smoke_server(args.python, args.model, args.log, start_timeout=args.timeout)}")
    except NotReady as exc:
        where = f"; log: {args.log}" if args.log else ""
        print(f"FAILED: {exc}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
