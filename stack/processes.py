"""Child processes with their own process group, a log file and guaranteed cleanup.

Every server ``prelabel up`` and the test harness start (Label Studio, llama.cpp, Redis, the
backend, the worker) is a ``ManagedProcess``:

* it runs in its own session / process group (``start_new_session``), so stopping it kills the
  whole tree it spawned (SIGTERM to the group, then SIGKILL after a grace period);
* on Linux it also gets ``PR_SET_PDEATHSIG`` so it dies if its parent is killed hard;
* its stdout+stderr go to a log file, whose tail is shown when it fails to start;
* it is registered in a module-level registry that an ``atexit`` hook (and the session
  fixtures' finalizers) drain, so nothing is left behind on failures or Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import psutil

from prelabel.errors import UserError
from prelabel.stack.llm_smoke import exit_text


class StartupError(UserError, RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


_registry: list[ManagedProcess] = []
_registry_lock = threading.Lock()

# Variables of the calling virtualenv that must not leak into another venv's process.
_VENV_LEAKS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "PYTHONSTARTUP",
    "PYTEST_ADDOPTS",
    "PYTEST_CURRENT_TEST",
    "__PYVENV_LAUNCHER__",
)


def child_env(
    venv: str | os.PathLike | None = None, extra: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """Environment for a child: ours minus venv leaks, ``venv/bin`` first on PATH, plus
    ``extra`` (a value of ``None`` removes the variable)."""
    env = {k: v for k, v in os.environ.items() if k not in _VENV_LEAKS}
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{Path(venv) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def tail(path: str | os.PathLike, lines: int = 60) -> str:
    """Last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class ManagedProcess:
    """One server process in its own process group, logging to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: str | os.PathLike,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.popen: subprocess.Popen | None = None
        self._descendants: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            # pdeathsig is tied to the forking *thread*: only use it from the main thread.
            preexec = (
                _pdeathsig
                if (
                    sys.platform.startswith("linux")
                    and threading.current_thread() is threading.main_thread()
                )
                else None
            )
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=preexec,  # only set from the main thread, see above
            )
        with _registry_lock:
            _registry.append(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def started_pid(self) -> int:
        """The pid of a process that was started (asking before ``start()`` is a bug)."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} has no pid: it was never started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def exit_text(self) -> str:
        """How it ended, for people: "exited with code 1" or "killed by SIGSEGV"."""
        return exit_text(self.returncode())

    def _remember_descendants(self) -> None:
        if self.popen is None or self.popen.poll() is not None:  # not started, or gone: no tree to walk
            return
        try:
            for child in psutil.Process(self.popen.pid).children(recursive=True):
                self._descendants.add(child.pid)
        except psutil.Error:
            pass

    def _group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover
            return True

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``grace`` seconds."""
        if self.popen is None:
            return
        pgid = self.popen.pid  # leader of its own session: pgid == pid
        self._remember_descendants()
        if self.popen.poll() is None or self._group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.popen.poll()
                if self.popen.returncode is not None and not self._group_alive(pgid):
                    break
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        # Descendants that left the group (setsid/daemonize) die too.
        for pid in self._descendants:
            try:
                if psutil.pid_exists(pid):
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        with _registry_lock:
            if self in _registry:
                _registry.remove(self)

    # -- readiness -------------------------------------------------------------------------
    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def fail(self, message: str, lines: int = 60) -> StartupError:
        return StartupError(
            f"{self.name}: {message}\n  command: {' '.join(self.argv)}\n  log: {self.log_path}\n"
            f"----- last {lines} log lines -----\n{self.log_tail(lines)}\n-----"
        )

    def wait_until(
        self, check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25
    ) -> None:
        """Poll ``check()`` until it is true; raise ``StartupError`` (with the log tail) when
        the process exits first or ``timeout`` seconds pass. Exceptions from ``check`` count
        as "not yet"."""
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            if not self.alive():
                raise self.fail(f"{self.exit_text()} before {what}")
            try:
                if check():
                    return
            except Exception as exc:  # readiness probes fail in many ways
                last_exc = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {last_exc!r})" if last_exc else ""
                raise self.fail(f"not {what} after {timeout:.0f} s{detail}")
            time.sleep(interval)

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} log={self.log_path}>"


def started(process: ManagedProcess | None, server: str) -> ManagedProcess:
    """The process of a server this code started. Only a server found running elsewhere (an
    external LLM) has none, and that one is never asked for its process: None here is a bug."""
    if process is None:
        raise RuntimeError(f"{server} has no process: it was not started by prelabel")
    return process


def stop_all(processes: Iterable[ManagedProcess] | None = None) -> None:
    """Stop the given processes, or every registered one (newest first)."""
    with _registry_lock:
        targets = list(processes) if processes is not None else list(reversed(_registry))
    for proc in targets:
        try:
            proc.stop()
        except Exception as exc:  # cleanup of the others must go on
            print(f"[harness] could not stop {proc}: {exc!r}", file=sys.stderr)


def running() -> list[ManagedProcess]:
    with _registry_lock:
        return [p for p in _registry if p.alive()]


atexit.register(stop_all)


def _install_signal_cleanup() -> None:
    """SIGTERM/SIGHUP to pytest (CI cancelling a job) -> stop children, then die as usual."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        stop_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, handler)
        except (ValueError, OSError):  # pragma: no cover
            pass


_install_signal_cleanup()


__all__ = ["ManagedProcess", "StartupError", "child_env", "running", "started", "stop_all", "tail"]
