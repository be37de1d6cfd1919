"""The first command must work on any x86-64 machine and always stop cleanly.

* the installed llama.cpp CPU library is the portable build (no AMX tile or AVX-512 instructions);
* a crashing embedded server ends generation in seconds with one line, never a restart loop;
* SIGINT / SIGTERM during generate and filter stop them, leave no process behind, and the run resumes;
* one writer per run directory: a second writer is refused, a stale lock is taken over.

The embedded server is replaced by a stand-in (``workbench.testing.crashing_server``, the OpenAI
test double that dies of a chosen signal after N completions) through ``WORKBENCH_EMBEDDED_SERVER``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest

from workbench.config import RunConfig
from workbench.generate.local import LocalServer
from workbench.languages import load_registry
from workbench.plan import run_plan
from workbench.run import Run
from workbench.tables import FILTERED, GENERATED

from conftest import REPO
from filter_fixtures import make_run as make_filter_run

AMX = r"ldtilecfg|tileloadd|tdpbf16ps|tdpbssd"


# -- the portable build -------------------------------------------------------------------------
def _amx_instruction_count(library: Path) -> int:
    listing = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    import re

    return len(re.findall(AMX, listing))


@pytest.fixture(scope="module")
def objdump():
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")


def test_the_amx_check_sees_amx_instructions_in_a_native_object(tmp_path, objdump):
    """The detector itself: an object compiled with AMX intrinsics is counted as AMX."""
    source = tmp_path / "amx.c"
    source.write_text('#include <immintrin.h>\n'
                      'void load(const void *cfg, const void *p) { _tile_loadconfig(cfg); _tile_loadd(0, p, 64); }\n')
    compiled = subprocess.run(["cc", "-O2", "-mamx-tile", "-c", str(source), "-o", str(tmp_path / "amx.o")],
                              capture_output=True, text=True)
    if compiled.returncode != 0:
        pytest.skip(f"this C compiler cannot emit AMX: {compiled.stderr.strip()[:120]}")
    assert _amx_instruction_count(tmp_path / "amx.o") >= 2


def test_installed_llama_cpp_cpu_library_is_portable(objdump):
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        pytest.skip("llama-cpp-python is not installed (extra 'local')")
    libraries = sorted(set(map(os.path.realpath, glob.glob(str(Path(spec.origin).parent / "lib" / "libggml-cpu*.so*")))))
    assert libraries, "no libggml-cpu library inside the llama_cpp package"
    for library in libraries:
        assert _amx_instruction_count(Path(library)) == 0, f"{library} uses AMX tiles: not the portable build"
        listing = subprocess.run(["objdump", "-d", library], capture_output=True, text=True, check=True).stdout
        assert "%zmm" not in listing, f"{library} uses AVX-512: not the portable build"
        assert "%ymm" in listing, f"{library} has no AVX2 code at all: a slow generic build"


# -- the embedded server: ready means answering, fail fast ---------------------------------------
def _local_run(root: Path, languages=("sw",), quota=4, **generate) -> Run:
    settings = {"base_url": "local", "max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **generate}
    config = RunConfig.model_validate({
        "run": {"name": root.name, "languages": list(languages), "quota": quota}, "generate": settings})
    run = Run.create(root)
    run.config_path.write_text(config.to_toml())
    run_plan(run, config, load_registry())
    return run


def _stand_in_env(tmp_path: Path, *, good: int, per_process: bool = False, latency: float = 0.0,
                  crash_signal: str = "SIGSEGV", hang_from: int | None = None) -> dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "stand-in.count"
    command = (f"{sys.executable} -m workbench.testing.crashing_server --port {{port}} --good {good} "
               f"--signal {crash_signal} --latency {latency} --state {state}")
    if per_process:
        command += " --per-process"
    if hang_from is not None:
        command += f" --hang-from {hang_from}"
    return dict(os.environ, PYTHONPATH=str(REPO), WORKBENCH_EMBEDDED_SERVER=command)


def _workbench(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _stand_ins_alive(tmp_path: Path) -> list[psutil.Process]:
    """Stand-in server processes of this test still running (found by their state file)."""
    marker = str(tmp_path / "stand-in.count")
    alive = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(process.info["cmdline"] or []) and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def _cache_statuses(run: Run) -> dict[str, tuple[str, str]]:
    if not run.cache_path.exists():
        return {}
    try:
        with sqlite3.connect(run.cache_path) as db:
            return {key: (status, response) for key, status, response in
                    db.execute("SELECT key, status, raw_response FROM requests")}
    except sqlite3.OperationalError:  # tables not created yet
        return {}


def test_server_that_dies_on_its_first_completion_stops_generation_with_one_line(tmp_path, shared_data):
    run = _local_run(tmp_path / "run")
    plan_before = {p.name: p.read_bytes() for p in (run.root / "plan").glob("*.parquet")}
    done = _workbench("generate", str(run.root), env=_stand_in_env(tmp_path, good=0), timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = _error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert "SIGSEGV" in line and "first chat completion" in line
    assert "server log" in line and "make llama-portable" in line and "GGML_NATIVE=OFF" in line
    assert {p.name: p.read_bytes() for p in (run.root / "plan").glob("*.parquet")} == plan_before
    assert _stand_ins_alive(tmp_path) == []


def test_server_that_keeps_dying_is_not_restarted_forever_and_finished_answers_are_kept(tmp_path, shared_data):
    # retries wait long enough for the supervisor to restart the server, as with the default backoff
    run = _local_run(tmp_path / "run", quota=6, max_retries=8, backoff_base_s=0.5, backoff_max_s=2.0)
    # each stand-in process answers its readiness completion and one real request, then dies
    env = _stand_in_env(tmp_path, good=2, per_process=True, crash_signal="SIGILL")
    done = _workbench("generate", str(run.root), env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    line = _error_lines(done.stderr)[0]
    assert "SIGILL" in line and "3 times within 60s" in line and "not restarting" in line
    finished = {k: v for k, v in _cache_statuses(run).items() if v[0] == "ok"}
    assert len(finished) >= 2  # answers that came back before the deaths are in the cache
    assert _stand_ins_alive(tmp_path) == []
    # a working server resumes the run: every earlier answer is reused as it was, the rest completes
    done = _workbench("generate", str(run.root), "--retry-failed", env=_stand_in_env(tmp_path / "ok", good=10**6),
                      timeout=120)
    assert done.returncode == 0, done.stderr
    after = _cache_statuses(run)
    assert all(after[k] == v for k, v in finished.items())
    table = run.read_table("generated", "sw", GENERATED)
    assert table.height == 6 and set(table["status"]) == {"ok"}


def test_restarted_server_that_never_answers_is_given_up_on_once_not_restarted_again(tmp_path, monkeypatch):
    # completion 1 (readiness) answers, 2 kills the process, 3 (the restart's readiness) never comes back:
    # a live server that never answers is not a death, so it must not be restarted (again and again)
    for key, value in _stand_in_env(tmp_path, good=1, hang_from=3).items():
        monkeypatch.setenv(key, value)
    # a library caller's process: Python's own SIGINT handler (an in-process CLI test earlier in the session may
    # have left workbench.signals' handler installed, which ignores the supervisor's interrupt outside a command)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    server = LocalServer(startup_timeout_s=4).start()
    interrupted = False
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{server.base_url}/chat/completions", timeout=10,
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        # the supervisor sets fatal, stops the hung server (SIGTERM, up to 3 s, then SIGKILL) and only then
        # interrupts the main thread: wait for the interrupt itself, not a fixed time after fatal
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                time.sleep(0.1)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        server.stop()
        signal.signal(signal.SIGINT, previous)
    assert server.fatal is not None and interrupted
    assert "did not answer a chat completion within 4s" in server.fatal.line()
    assert server.restarts == 1
    assert _stand_ins_alive(tmp_path) == []


# -- clean stops -------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_generate_stops_cleanly_refuses_a_second_writer_and_resumes(tmp_path, shared_data, stop_signal):
    run = _local_run(tmp_path / "run", languages=("sw", "de"), quota=20)
    env = _stand_in_env(tmp_path, good=10**6, latency=0.5)
    process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "generate", str(run.root)], env=env,
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(s == "ok" for s, _ in _cache_statuses(run).values()) < 2:
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read()
        # a second writer on the same run is refused, naming the holder
        second = _workbench("generate", str(run.root), env=env, timeout=30)
        assert second.returncode == 2
        assert f"pid {process.pid}" in _error_lines(second.stderr)[0]
        assert run.lock.holder() == process.pid
        process.send_signal(stop_signal)
        returncode = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert returncode == 130, stderr
    assert "Traceback" not in stderr and "re-run the same command to resume" in stderr
    assert _stand_ins_alive(tmp_path) == []
    assert run.lock.holder() is None
    kept = {k: v for k, v in _cache_statuses(run).items() if v[0] == "ok"}
    done = _workbench("generate", str(run.root), env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(_cache_statuses(run)[k] == v for k, v in kept.items())
    rows = pl.concat([run.read_table("generated", code, GENERATED) for code in ("sw", "de")])
    assert rows.height == 40 and set(rows["status"]) == {"ok"}


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_filter_leaves_no_pool_workers_and_resumes(tmp_path, shared_data, stop_signal):
    registry = load_registry()
    # large enough that 2 workers need seconds even on a fast idle machine (measured 4.2 s here, idle)
    sizes = {"sw": 5000, "de": 5000, "ja": 5000}
    run = make_filter_run(tmp_path / "run", shared_data, registry, sizes, failed=0)
    config = RunConfig.model_validate({"run": {"name": "run"}, "filter": {"workers": 2, "chunk_size": 50}})
    run.config_path.write_text(config.to_toml())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "filter", str(run.root)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    workers: list[psutil.Process] = []
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2 and process.poll() is None:
            workers = parent.children(recursive=True)
            time.sleep(0.05)
        assert len(workers) >= 2, "the filter should be running its pool"
        time.sleep(0.3)  # let the workers take chunks
        assert process.poll() is None, "the filter finished before it could be interrupted"
        process.send_signal(stop_signal)
        returncode = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    psutil.wait_procs(workers, timeout=5)
    assert [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE] == []
    assert run.stage_entry("filter") is None or run.stage_entry("filter")["status"] != "complete"
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "filter", str(run.root)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for code, n in sizes.items():
        kept = run.read_table("accepted", code, FILTERED).height + run.read_table("rejected", code, FILTERED).height
        assert kept == n


# -- one writer per run ------------------------------------------------------------------------
def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, shared_data):
    registry = load_registry()
    run = make_filter_run(tmp_path / "run", shared_data, registry, {"sw": 10})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with run.lock.writer():
        assert run.lock.holder() == os.getpid()
        refused = _workbench("filter", str(run.root), env=env)
        assert refused.returncode == 2
        lines = _error_lines(refused.stderr)
        assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0] and str(run.root) in lines[0]
        assert not (run.root / "accepted").exists()  # refused before doing anything
        with run.lock.writer():  # re-entrant in the holding process
            pass
    assert run.lock.holder() is None
    # a holder killed with SIGKILL leaves its pid in the lock file; the kernel has released the lock
    killed = subprocess.run([sys.executable, "-c",
                             "import os, signal, sys; from workbench.run import Run\n"
                             f"run = Run.open({str(run.root)!r})\n"
                             "with run.lock.writer(): os.kill(os.getpid(), signal.SIGKILL)"],
                            env=env, cwd=REPO, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert (run.root / ".writer.lock").read_text().strip().isdigit()
    assert run.lock.holder() is None
    done = _workbench("filter", str(run.root), env=env)
    assert done.returncode == 0, done.stderr
    assert run.read_table("accepted", "sw", FILTERED).height + run.read_table("rejected", "sw", FILTERED).height == 10
