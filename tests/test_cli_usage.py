"""The CLI with ordinary user mistakes: one line, exit 2, a suggestion, nothing created or saved.

Most cases call ``workbench.cli.run_cli`` in-process (the console script ``workbench.cli.main`` without its
process exit, without a Python start per case); one runs the installed script.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import typer
from rich.console import Console

from workbench.cli_render import GenerateProgress, progress_line
from workbench.generate.engine import Progress
from workbench.languages import load_registry
from workbench.run import Run

from cli_support import workbench


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "{run}", "--quta", "3"], "no such option --quta (did you mean --quota?)"),
        (["plan"], "Missing argument 'RUN'"),
        (["plan", "{run}", "--quota", "many"], "Invalid value for '--quota'"),
        (["plann", "{run}"], "no such command 'plann' (did you mean plan?)"),
        (["stauts", "{run}"], "no such command 'stauts' (did you mean status?)"),
        ([], "no command given (one of: languages, plan, generate, "),
        (["batch"], "workbench batch: no command given (one of: status, collect"),
        (["eval", "{run}"], "{run}: not a run directory (no manifest.json) (check the path, or add --create"),
        (["eval", "--model", "bm25"], "missing argument RUN"),
        (["languages", "--format", "xml"], "unknown format 'xml'"),
        (["plan", "{run}", "--families", "shortlong"], "'shortlong' is not a task family (did you mean short_long?"),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_create_nothing(capsys, tmp_path, args, expected):
    run = tmp_path / "typo"
    code, _, err = workbench(capsys, *[a.format(run=run) for a in args])
    assert code == 2
    assert expected.format(run=run) in one_error_line(err)
    assert not run.exists()


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("jp", "ja"), ("swahili", "sw"), ("SW", "sw"), ("Swahili", "sw"), ("jpn", "ja"), ("Japanese", "ja"),
     ("HIGH", "high"), ("kiswahili", "sw")],
)
def test_language_did_you_mean_and_nothing_created(capsys, tmp_path, typed, meant):
    run = tmp_path / "r"
    code, _, err = workbench(capsys, "plan", str(run), "-l", typed)
    assert code == 2
    line = one_error_line(err)
    assert f"--languages: unknown language code '{typed}' (did you mean {meant}" in line
    assert not run.exists()


def test_registry_suggestions_put_the_intended_code_first():
    registry = load_registry()
    assert registry.suggest("jp") == ["ja"]
    assert registry.suggest("swahili") == ["sw"]
    assert registry.suggest("SW") == ["sw"]
    assert registry.suggest("cn") == ["zh"]
    assert registry.suggest("engl") == ["en"]  # a name cut short
    assert registry.suggest("qqqq") == []


def test_script_did_you_mean(capsys):
    code, _, err = workbench(capsys, "languages", "--script", "latn")
    assert code == 2
    assert "--script: 'latn' is not an ISO 15924 code this registry knows (did you mean Latn?)" in one_error_line(err)


def test_a_rejected_value_is_never_saved_to_run_toml(capsys, tmp_path):
    run = tmp_path / "r"
    assert workbench(capsys, "plan", str(run), "-l", "sw", "--quota", "3")[0] == 0
    saved = (run / "run.toml").read_bytes()
    for args in (["plan", str(run), "-l", "jp"],
                 ["plan", str(run), "--families", "shortlong"],
                 ["generate", str(run), "--structured-output", "xml"],
                 ["generate", str(run), "--concurrency", "0"],
                 ["train", str(run), "--deepspeed", "zero9"]):
        code, _, err = workbench(capsys, *args)
        assert code == 2, args
        one_error_line(err)
        assert (run / "run.toml").read_bytes() == saved, args
    # and the next plain command still works with what was saved
    assert workbench(capsys, "plan", str(run))[0] == 0


@pytest.mark.parametrize(
    "args",
    [["generate", "{run}"], ["generate", "{run}", "--dry-run"], ["filter", "{run}"], ["audit", "{run}"],
     ["train", "{run}", "--model", "minilm"], ["eval", "{run}", "--model", "bm25"],
     ["report", "{run}"], ["status", "{run}"], ["batch", "status", "{run}"], ["batch", "collect", "{run}"],
     ["export", "{run}"]],
)
def test_a_mistyped_run_is_one_line_and_creates_nothing(capsys, tmp_path, args):
    run = tmp_path / "runs" / "typo"
    code, _, err = workbench(capsys, *[a.format(run=run) for a in args])
    assert code == 2
    assert f"{run}: not a run directory" in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_read_only_commands_never_write_run_toml(capsys, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[run]\nlanguages = ["sw"]\nquota = 2\n[generate]\nbase_url = "http://127.0.0.1:9/v1"\n'
                      'model = "gpt-4o-mini"\n')
    run = tmp_path / "r"
    assert workbench(capsys, "plan", str(run), "--config", str(config))[0] == 0
    before = (run / "run.toml").stat()  # run.toml is replaced by rename on every write: a new inode

    def untouched() -> bool:
        after = (run / "run.toml").stat()
        return (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    code, out, err = workbench(capsys, "generate", str(run), "--dry-run", "--model", "gpt-4o")
    assert code == 0, err
    assert "dry run: gpt-4o" in out and untouched()
    code, out, err = workbench(capsys, "batch", "status", str(run))
    assert code == 0 and "no open batches" in out, err
    code, out, err = workbench(capsys, "status", str(run))
    assert code == 0 and "plan" in out, err
    from workbench.encoder import minilm_path

    code, out, err = workbench(capsys, "train", str(run), "--estimate", "--model", str(minilm_path()),
                               "--deepspeed", "none")
    assert code == 0, err
    assert "per-GPU memory estimate" in out
    assert untouched()
    assert 'model = "gpt-4o-mini"' in (run / "run.toml").read_text()
    # the estimate is about the model: it needs no run directory and creates none
    code, out, err = workbench(capsys, "train", str(tmp_path / "none"), "--estimate", "--model", str(minilm_path()),
                               "--deepspeed", "none")
    assert code == 0 and "per-GPU memory estimate" in out, err
    assert not (tmp_path / "none").exists()


def test_eval_takes_run_positionally_and_keeps_run_option_as_deprecated_alias(capsys, tmp_path):
    """The positional RUN and the old --run reach the same place; only --create/--run make a folder."""
    code, _, err = workbench(capsys, "eval", str(tmp_path / "a"), "--create", "--model", "bm25", "--task", "msmarco")
    assert code == 2 and "unknown task 'msmarco'" in one_error_line(err)
    code, _, err = workbench(capsys, "eval", str(tmp_path / "a"), "--run", str(tmp_path / "b"))
    assert code == 2 and "RUN given twice" in one_error_line(err)
    code, _, err = workbench(capsys, "eval", "--run", str(tmp_path / "c"), "--model", "bm25", "--task", "msmarco")
    assert code == 2 and "unknown task 'msmarco'" in one_error_line(err)
    assert not (tmp_path / "c").exists()


def test_help_text_renders_brackets_literally(capsys):
    for args, literal in ((["report", "--help"], "PATH[@SYSTEM]"), (["run", "--help"], "runs/<[run] name>")):
        code, out, _ = workbench(capsys, *args)
        assert code == 0
        assert literal in " ".join(out.split()), out


def test_version_and_h_print_and_exit_0(capsys):
    from workbench import __version__

    code, out, _ = workbench(capsys, "--version")
    assert code == 0 and out.strip() == f"workbench {__version__}"
    code, long_help, _ = workbench(capsys, "--help")
    assert code == 0 and workbench(capsys, "-h") == (0, long_help, "")
    code, out, _ = workbench(capsys, "plan", "-h")
    assert code == 0 and "Usage: workbench plan" in out and "-h, --help" in out
    code, out, _ = workbench(capsys, "batch", "collect", "-h")
    assert code == 0 and "Usage: workbench batch collect" in out


def test_help_lists_every_command_with_its_whole_description(capsys):
    from workbench.cli import app

    for args, typer_app in ((["--help"], app), (["batch", "--help"], app.registered_groups[0].typer_instance)):
        code, out, _ = workbench(capsys, *args)
        listing = out.split("Commands:")[1]  # the usage line's "[ARGS]..." is click's own
        assert code == 0 and "..." not in listing and "…" not in listing, out
        flat = " ".join(listing.split())
        for command in typer.main.get_group(typer_app).commands.values():  # as click renders them
            if isinstance(command, click.Group):
                continue
            description = " ".join(command.help.strip().split("\n\n")[0].split())
            assert description in flat, (description, out)


def test_messages_keep_brackets_and_a_left_out_language_leaves_the_language_list(capsys, tmp_path):
    from workbench.config import load_config

    run_dir = tmp_path / "[exp] r"  # rich markup would take "[exp]" for a style tag and drop it
    code, out, err = workbench(capsys, "plan", str(run_dir), "--languages", "sw,yo", "--quota", "20")
    assert code == 0, err
    assert err.count("left out") == 1
    assert ("left out yo: eval-only language (no generation quota; give one in [run.quotas]); dropped from "
            "[run] languages") in err
    assert f"plan written: 20 slots in {run_dir / 'plan'}" in out and f"plan: {run_dir}" in out
    assert load_config(run_dir / "run.toml").run.languages == ["sw"]
    code, out, err = workbench(capsys, "plan", str(run_dir))
    assert code == 0 and "left out" not in err and "plan already current" in out
    # nothing left to generate: one line, before anything is created
    code, _, err = workbench(capsys, "plan", str(tmp_path / "y"), "-l", "yo")
    assert code == 2 and "--languages: no language to generate (yo: eval-only language" in one_error_line(err)
    assert not (tmp_path / "y").exists()
    # the pipeline from a config file: the same line once, and run.toml without yo
    config = tmp_path / "c.toml"
    config.write_text('[run]\nname = "p"\nlanguages = ["sw", "yo"]\nquota = 2\n[pipeline]\nstages = ["plan"]\n')
    code, out, err = workbench(capsys, "run", str(config), "--run-dir", str(tmp_path / "p"))
    assert code == 0, err
    assert err.count("left out yo: eval-only language") == 1 and "dropped from [run] languages" in err
    assert load_config(tmp_path / "p" / "run.toml").run.languages == ["sw"]
    assert "plan: done in" in out


def test_installed_script_usage_error_is_one_line(tmp_path):
    exe = Path(sys.executable).parent / "workbench"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
    proc = subprocess.run([*command, "plan", str(tmp_path / "r"), "--quta", "3"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "did you mean --quota?" in one_error_line(proc.stderr)
    assert not (tmp_path / "r").exists()


# -- status: a stage recorded as running with no live process -------------------------------
# Takes the run's writer lock the way a writing workbench command does, then holds it argv[2] seconds.
HOLD_LOCK = """
import sys, time
from pathlib import Path
from workbench.run import Run
with Run.open(Path(sys.argv[1])).lock.writer():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_status_shows_interrupted_when_no_process_holds_the_run(capsys, tmp_path):
    run_dir = tmp_path / "r"
    assert workbench(capsys, "plan", str(run_dir), "-l", "sw", "--quota", "2")[0] == 0
    run = Run.open(run_dir)
    run.record_stage("generate", status="running", config_hash="x")
    from workbench.status import run_status

    def generate_state() -> str:
        return next(row["status"] for row in run_status(run_dir) if row["stage"] == "generate")

    assert generate_state() == f"interrupted (resume with 'workbench generate {run_dir}')"
    # a lock file left behind by a process that ended: its flock is gone, so nobody holds the run
    dead = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(run_dir), "0"], timeout=60)
    assert dead.returncode == 0 and (run_dir / ".writer.lock").is_file()
    assert generate_state().startswith("interrupted")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert generate_state() == f"running (pid {holder.pid})"
    finally:
        holder.kill()
        holder.wait()
    assert generate_state().startswith("interrupted")
    run.record_stage("generate", status="running", config_hash="x", via="workbench run")
    assert generate_state() == (f"interrupted (resume with 'workbench run {run_dir / 'run.toml'} "
                                f"--run-dir {run_dir}')")
    code, out, _ = workbench(capsys, "status", str(run_dir))
    assert code == 0 and "interrupted" in out


# -- generate view: elapsed, ETA, plain lines off a terminal ---------------------------------
def _progress(done: int, planned: int, seconds_ago: float) -> Progress:
    state = Progress(started=time.monotonic() - seconds_ago)
    state.planned["sw"] = planned
    state.done["sw"] = done
    state.phase = "examples"
    return state


def test_progress_line_has_elapsed_and_eta():
    line = progress_line(_progress(done=10, planned=40, seconds_ago=20))
    assert "10/40 slots" in line and "elapsed 20s" in line and "ETA 1m00s" in line
    assert "ETA unknown" in progress_line(_progress(done=0, planned=40, seconds_ago=5))
    assert "ETA done" in progress_line(_progress(done=40, planned=40, seconds_ago=5))


def test_progress_prints_plain_lines_when_not_a_terminal():
    buffer = io.StringIO()
    view = GenerateProgress(Console(file=buffer, force_terminal=False, width=300), every_s=3600)
    assert view.live is None
    with view:
        view.update(_progress(1, 4, 1))
        view.update(_progress(2, 4, 2))  # within every_s: no second line
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2  # the first update and the final state
    assert lines[0].startswith("examples: 1/4 slots") and lines[1].startswith("examples: 2/4 slots")
    assert "\x1b[" not in buffer.getvalue()
    every_time = io.StringIO()
    with GenerateProgress(Console(file=every_time, force_terminal=False), every_s=0) as view:
        for done in range(3):
            view.update(_progress(done, 4, 1))
    assert len(every_time.getvalue().splitlines()) == 3  # the closing line repeats the last one, so it is not printed again


def test_batch_submit_to_an_unreachable_endpoint_is_one_error_line(capsys, tmp_path, monkeypatch):
    run = tmp_path / "r"
    assert workbench(capsys, "plan", str(run), "-l", "sw", "--quota", "2")[0] == 0
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    code, _, err = workbench(capsys, "generate", str(run), "--batch", "--base-url", "http://127.0.0.1:9/v1",
                             "--model", "gpt-4o-mini")
    assert code == 2
    assert "reach" in one_error_line(err)


def test_workbench_run_prints_plain_generation_progress_off_a_terminal(tmp_path, shared_data):
    """`workbench run` with output to files: progress lines on stdout, stderr kept for errors."""
    from workbench.testing.openai_double import OpenAIDouble

    with OpenAIDouble(shared_data) as double:
        config = tmp_path / "c.toml"
        config.write_text(f'[run]\nname = "p"\nlanguages = ["sw"]\nquota = 4\n[generate]\nbase_url = "{double.base_url}"\n'
                          'model = "double"\nstructured_output = "json_object"\n[pipeline]\nstages = ["plan", "generate"]\n')
        exe = Path(sys.executable).parent / "workbench"
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
        proc = subprocess.run([*command, "run", str(config), "--run-dir", str(tmp_path / "r")], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OPENAI_API_KEY": "test-key"})
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stdout.splitlines() if " slots · elapsed " in line]
    assert progress and progress[-1].startswith("examples: 4/4 slots") and "ETA done" in progress[-1], proc.stdout
    assert "\x1b[" not in proc.stdout and not proc.stderr.strip()
    assert "generate: done in" in proc.stdout


def test_each_command_opens_its_run_once(capsys, tmp_path, monkeypatch):
    """A command opens (or creates) its run directory once, however often it resolves the config:
    plan and report read the config twice, ``workbench run`` shows the status at the end."""
    config = tmp_path / "c.toml"
    config.write_text('[run]\nlanguages = ["sw"]\nquota = 2\n[generate]\nbase_url = "http://127.0.0.1:9/v1"\n'
                      'model = "gpt-4o-mini"\n[pipeline]\nstages = ["plan"]\n')
    run = tmp_path / "r"
    opened: list[str] = []
    real_open, real_create = Run.open.__func__, Run.create.__func__

    def counted(real, kind):
        def call(cls, root):
            opened.append(kind)
            return real(cls, root)
        return classmethod(call)

    monkeypatch.setattr(Run, "open", counted(real_open, "open"))
    monkeypatch.setattr(Run, "create", counted(real_create, "create"))
    for args, code in ((["plan", str(run), "--config", str(config)], 0),  # a new run: created once
                       (["plan", str(run)], 0),
                       (["plan", str(run), "--dry-run"], 0),
                       (["generate", str(run), "--dry-run"], 0),
                       (["status", str(run)], 0),
                       (["batch", "status", str(run)], 0),
                       (["report", str(run)], 2),  # no eval results: one line, after both config reads
                       (["run", str(config), "--run-dir", str(run)], 0),
                       (["run", str(config), "--run-dir", str(run), "--dry-run"], 0)):
        opened.clear()
        result, _, err = workbench(capsys, *args)
        assert result == code, (args, err)
        assert len(opened) == 1, (args, opened)


def test_a_value_outside_a_vocabulary_is_named_by_its_kind_its_choices_and_its_option():
    """The config names the vocabulary and its choices, in a file and for an option (the CLI has no copy)."""
    from workbench.config import parse_config
    from workbench.errors import ConfigError
    from workbench.eval.targets import EVAL_TASKS

    with pytest.raises(ConfigError) as err:
        parse_config({"train": {"deepspeed": "zero9"}}, where="x.toml")
    assert str(err.value) == "x.toml: field 'train.deepspeed': unknown DeepSpeed mode 'zero9' (use zero2, zero3, none)"
    with pytest.raises(ConfigError) as err:
        parse_config({"train": {"deepspeed": "zero9"}}, where="command-line options",
                     options={"train.deepspeed": "--deepspeed"})
    assert str(err.value) == "--deepspeed: unknown DeepSpeed mode 'zero9' (use zero2, zero3, none)"
    with pytest.raises(ConfigError) as err:
        parse_config({"pipeline": {"eval_also": [{"task": "msmarco"}]}}, where="x.toml")
    assert str(err.value) == (f"x.toml: field 'pipeline.eval_also.0.task': unknown task 'msmarco' "
                              f"(use one of {', '.join(EVAL_TASKS)})")
