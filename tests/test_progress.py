"""Train and eval show progress (plain lines off a terminal); library warnings go to the stage log.

The end-to-end case runs ``workbench run`` (train, then eval of the trained model on XQuAD de) as
a new user would, with stdout and stderr going to pipes, on a tiny random Mistral and real
Tatoeba/XQuAD text. The others drive the view and the stage log directly with real loggers and
real Python warnings.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from tqdm.auto import tqdm

from workbench.cli_render import StageProgress, eval_line, train_line
from workbench.progress import EvalProgress, TrainProgress
from workbench.stagelog import logged_note, stage_log

from conftest import REPO
from train_support import accepted_run, tiny_model

LIBRARY_WARNING = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ WARNING (?!workbench)(\S+): (.*)$")


@pytest.mark.slow
def test_train_and_eval_print_progress_off_a_terminal_and_log_library_warnings(tmp_path, shared_data):
    model = tiny_model(tmp_path / "tiny", shared_data)
    run = accepted_run(tmp_path / "run", shared_data, n=48)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[run]\nname = "p"\n[train]\nmodel = "{model}"\ndeepspeed = "none"\nbatch_size = 8\nsteps = 4\n'
        'max_length = 32\nwarmup_steps = 0\n'
        f'[eval]\ntask = "xquad"\ndata_dir = "{REPO / "examples" / "data" / "xquad"}"\nlanguages = ["de"]\n'
        '[pipeline]\nstages = ["train", "eval"]\neval_systems = ["trained"]\n')
    exe = Path(sys.executable).parent / "workbench"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
    proc = subprocess.run([*command, "run", str(config), "--run-dir", str(run.root)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TERM": "dumb"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert not proc.stderr.strip(), proc.stderr  # no warning, no bar: stderr stays for errors
    assert "\x1b[" not in out and "\r" not in out
    train_lines = [line for line in out.splitlines() if line.startswith("train: step ")]
    assert train_lines[0].startswith("train: step 0/4") and "ETA unknown" in train_lines[0]
    assert re.match(r"train: step 4/4 · loss \d+\.\d{4} · elapsed \S+ · \d+\.\d\d s/step · ETA done$", train_lines[-1])
    eval_lines = [line for line in out.splitlines() if line.startswith("eval 1/1: XQuADRetrieval")]
    assert eval_lines and " · tiny-ft · " in eval_lines[-1]
    assert re.search(r" · de · tiny-ft · documents 378/378 texts · \d+\.\d passages/s · elapsed \S+ · ETA done$",
                     eval_lines[-1])
    # the library warnings are in the stage logs, counted once on the stage's line, never on a console
    for stage in ("train", "eval"):
        log = (run.root / "logs" / f"{stage}.log").read_text(encoding="utf-8")
        found = [m for m in map(LIBRARY_WARNING.match, log.splitlines()) if m]
        done = next(line for line in out.splitlines() if line.startswith(f"{stage}: done in"))
        if found:
            assert f"; {len(found)} library warning" in done and f"{run.root / 'logs' / stage}.log, not shown" in done
        else:
            assert "library warning" not in done
        for match in found:
            assert match.group(2)[:60] not in out + proc.stderr
    train_log = (run.root / "logs" / "train.log").read_text(encoding="utf-8")
    assert "FutureWarning" in train_log  # transformers' gradient_checkpointing_enable rename, at least
    assert "INFO workbench.train.loop: step 4 loss" in train_log  # the workbench's own record, too


def test_stage_log_routes_library_output_to_the_file_and_keeps_the_workbench_warnings(tmp_path, capsys):
    root_handlers = list(logging.getLogger().handlers)
    with stage_log(tmp_path, "eval") as log:
        # a library that prints through its own console handler, created during the stage (DeepSpeed's pattern)
        library = logging.getLogger("somelib")
        library.propagate = False
        library.addHandler(logging.StreamHandler(sys.stdout))
        library.warning("Setting accelerator to CPU")
        logging.getLogger("otherlib.sub").warning("a propagating library warning")
        warnings.warn("a method was renamed", FutureWarning)
        warnings.warn("no stopwords for this language", UserWarning)
        logging.getLogger("workbench.eval.stage").warning("bm25 cannot mine bitext: skipped")
        logging.getLogger("workbench.eval.stage").info("eval minilm on XQuADRetrieval")
        for _ in tqdm(range(3), desc="Matching sentences"):  # mteb's bitext bar, unconditional there
            pass
    out, err = capsys.readouterr()
    text = (tmp_path / "logs" / "eval.log").read_text(encoding="utf-8")
    for message in ("Setting accelerator to CPU", "a propagating library warning", "a method was renamed",
                    "no stopwords for this language"):
        assert message in text and message not in out + err
    assert "bm25 cannot mine bitext: skipped" in text and err.strip() == "warning: bm25 cannot mine bitext: skipped"
    assert "Matching sentences" not in out + err
    assert "INFO workbench.eval.stage: eval minilm on XQuADRetrieval" in text
    assert log.summary() == {"log": "logs/eval.log", "library_warnings": 4,
                             "by_source": {"somelib": 1, "otherlib": 1, "FutureWarning": 1, "UserWarning": 1}}
    assert logged_note({"logged": log.summary()}) == (
        "4 library warnings (somelib 1, otherlib 1, FutureWarning 1, UserWarning 1) written to logs/eval.log, not shown")
    # afterwards the library prints as it did before, and nothing of the stage stays attached
    assert [type(h) for h in library.handlers] == [logging.StreamHandler]
    assert logging.getLogger().handlers == root_handlers
    assert not tqdm(range(1), file=io.StringIO()).disable
    library.handlers.clear()


def test_stage_view_prints_plain_lines_off_a_terminal():
    buffer = io.StringIO()
    view = StageProgress(Console(file=buffer, force_terminal=False, width=300), every_s=3600)
    assert view.live is None
    state = TrainProgress(steps=10, started=time.monotonic() - 20)
    with view:
        view.update(state)
        state.step, state.loss = 5, 0.25
        view.update(state)  # within every_s: nothing new printed
    lines = buffer.getvalue().splitlines()
    # the clock runs on between the lines (a loaded machine): the pace and ETA are matched, not timed
    assert re.fullmatch(r"train: step 0/10 · loss — · elapsed 2\ds · — s/step · ETA unknown", lines[0])
    assert re.fullmatch(r"train: step 5/10 · loss 0\.2500 · elapsed 2\ds · 4\.\d\d s/step · ETA 2\ds", lines[1])
    assert len(lines) == 2

    buffer = io.StringIO()
    with StageProgress(Console(file=buffer, force_terminal=False, width=300), every_s=3600) as view:
        first = EvalProgress(sections=2, section=1, task="XQuADRetrieval", system="minilm", subset="de",
                             side="documents", done=100, total=400, started=time.monotonic() - 10)
        view.update(first)
        first.done = 400
        view.update(first)
        view.update(EvalProgress(sections=2, section=2, task="TatoebaBitextMining", system="minilm", subset="amh-eng",
                                 total=0, started=time.monotonic()))  # a new target: the last one's line, then its own
    lines = buffer.getvalue().splitlines()
    assert re.fullmatch(r"eval 1/2: XQuADRetrieval · de · minilm · documents 100/400 texts · \d+\.\d passages/s · "
                        r"elapsed 1\ds · ETA \d\ds", lines[0])
    assert lines[1].startswith("eval 1/2: XQuADRetrieval · de · minilm · documents 400/400 texts") and lines[1].endswith("ETA done")
    assert lines[2].startswith("eval 2/2: TatoebaBitextMining · amh-eng · minilm · elapsed 0s") and len(lines) == 3


def test_lines_say_unknown_before_the_first_unit():
    assert train_line(TrainProgress(steps=3)).endswith("ETA unknown")
    assert "ETA unknown" in eval_line(EvalProgress(sections=1, section=1, task="t", system="s", total=10))


def test_bitext_line_counts_sentences_without_a_side():
    state = EvalProgress(sections=8, section=7, task="Tatoeba", system="minilm", subset="deu-eng", side="texts",
                         done=464, total=5116, started=time.monotonic() - 66)
    assert re.match(r"eval 7/8: Tatoeba · deu-eng · minilm · 464/5,116 texts · \d\.\d passages/s", eval_line(state))
