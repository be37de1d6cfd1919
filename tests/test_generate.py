"""Generate stage against the OpenAI test double (real HTTP on 127.0.0.1, real Tatoeba text)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from workbench.errors import WorkbenchError
from workbench.families import FAMILIES
from workbench.generate import budget, prompts
from workbench.generate.stage import run_generate
from workbench.languages import load_registry
from workbench.plan import run_plan
from workbench.runconfig import resolve_run_config
from workbench.tables import GENERATED, TASKS
from workbench.testing.openai_double import Faults, OpenAIDouble

from conftest import REPO

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2.0, "model": "double"}


@pytest.fixture
def double(shared_data):
    with OpenAIDouble(shared_data) as server:
        yield server


def make_run(root: Path, base_url: str, languages=("sw", "en"), quota=12, **generate):
    settings = {**FAST, "base_url": base_url, **generate}
    run, config = resolve_run_config(root, None, {"run": {"languages": list(languages), "quota": quota},
                                                  "generate": settings})
    registry = load_registry()
    run_plan(run, config, registry)
    return run, config, registry


def generated(run, code):
    return run.read_table("generated", code, GENERATED)


def cache_rows(run) -> dict[str, str]:
    with sqlite3.connect(run.cache_path) as db:
        return dict(db.execute("SELECT key, status FROM requests"))


# -- prompts and schemas --------------------------------------------------------------------
def test_templates_fill_language_name_and_note_for_every_family_and_step():
    registry = load_registry()
    serbian = registry.get("sr")
    for name, family in FAMILIES.items():
        slot = {"slot_id": f"sr-{name}-00000", "language": "sr", "family": name, "seed": 1, "target_language": "en",
                **{k: v[0] for k, v in family.placeholders.items()}}
        text = prompts.example_messages(slot, "Given a recipe, find similar recipes.", registry)[0]["content"]
        assert "Serbian" in text and "Cyrillic" in text, name
        for field_name in family.fields:
            assert f'"{field_name}"' in text, (name, field_name)
        if family.brainstorm:
            assert "Given a recipe" in text
            brainstorm = prompts.brainstorm_messages(name, serbian)[0]["content"]
            assert "Serbian" in brainstorm and '"tasks"' in brainstorm
    bitext = prompts.example_messages({"slot_id": "sr-bitext-0", "language": "sr", "family": "bitext", "seed": 1,
                                       "unit": "sentence", "high_score": "4", "low_score": "2",
                                       "difficulty": "college", "target_language": "de"}, None, registry)
    assert "German" in bitext[0]["content"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_answer_schema_per_family(family):
    fields = FAMILIES[family].fields
    good = {name: f"text for {name}\nwith a raw newline" for name in fields}
    raw = json.dumps(good).replace("\\n", "\n")  # a raw newline inside a JSON string (llama.cpp does this)
    assert prompts.parse_answer(family, raw) == good
    assert prompts.parse_answer(family, f"Here you go:\n```json\n{json.dumps(good)}\n```") == good
    missing = dict(good)
    missing.pop(fields[-1])
    with pytest.raises(prompts.InvalidAnswer, match=fields[-1]):
        prompts.parse_answer(family, json.dumps(missing))
    with pytest.raises(prompts.InvalidAnswer, match="empty text"):
        prompts.parse_answer(family, json.dumps({**good, fields[0]: "  "}))
    with pytest.raises(prompts.InvalidAnswer, match="invalid JSON"):
        prompts.parse_answer(family, json.dumps(good)[:-5])
    with pytest.raises(prompts.InvalidAnswer, match="string"):
        prompts.parse_answer(family, json.dumps({**good, fields[0]: 7}))
    schema = prompts.json_schema(family)
    assert schema["required"] == list(fields) and schema["additionalProperties"] is False


def test_brainstorm_answer_wrapped_list_and_dedup():
    assert prompts.parse_answer("brainstorm", '["a", "b", "a", " "]') == {"tasks": ["a", "b"]}
    assert prompts.parse_answer("brainstorm", '{"tasks": ["x"]}') == {"tasks": ["x"]}
    with pytest.raises(prompts.InvalidAnswer):
        prompts.parse_answer("brainstorm", '{"tasks": []}')


# -- the engine ------------------------------------------------------------------------------
def test_generate_writes_one_row_per_slot_and_rerun_sends_nothing(double, tmp_path):
    run, config, registry = make_run(tmp_path / "run", double.base_url, quota=15)
    result = run_generate(run, config, registry)
    for code in ("sw", "en"):
        plan = run.read_table("plan", code, __import__("workbench.tables", fromlist=["PLAN"]).PLAN)
        table = generated(run, code)
        assert table["slot_id"].to_list() == plan["slot_id"].to_list()
        assert set(table["status"]) == {"ok"}
        for row in table.iter_rows(named=True):
            for name in FAMILIES[row["family"]].fields:
                assert row[name], (row["slot_id"], name)
        tasks = run.read_table("tasks", code, TASKS)
        two_step = {f for f in table["family"] if FAMILIES[f].brainstorm}
        assert set(tasks["family"]) == two_step
        used = table.filter(pl.col("family").is_in(list(two_step)))
        assert used["task"].is_in(tasks["task"].to_list()).all()
    swahili = generated(run, "sw")
    sw_sentences = set((REPO.parent / "shared/data/tatoeba/tatoeba.swh-eng.swh").read_text().splitlines())
    sts = swahili.filter(pl.col("family") == "sts")
    assert sts["S1"].is_in(list(sw_sentences)).all()  # the double answered in the requested language
    assert result.stats["prompt_tokens"] > 0 and result.stats["completion_tokens"] > 0
    assert run.stage_entry("generate")["status"] == "complete"
    sent = double.stats.total
    again = run_generate(run, config, registry)
    assert again.current and double.stats.total == sent  # current: nothing runs
    run.table_path("generated", "sw").unlink()  # an output lost: the stage runs, from the cache
    rebuilt = run_generate(run, config, registry)
    assert not rebuilt.current and double.stats.total == sent  # cache hit: zero requests
    assert rebuilt.stats["requests_sent"] == 0
    assert generated(run, "sw").equals(swahili)


@pytest.mark.parametrize("fault", ["429", "500", "slow", "truncated", "malformed", "wrong_language", "drop"])
def test_each_fault_class_is_recovered(double, tmp_path, fault):
    double.set_faults(Faults(**{f"rate_{fault}": 1.0}, max_faults_per_key=1, slow_seconds=1.5, retry_after=0.02))
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=6, timeout_s=0.5)
    result = run_generate(run, config, registry)
    table = generated(run, "sw")
    assert table.height == 6 and set(table["status"]) == {"ok"}
    injected = sum(double.stats.faults[fault].values())
    assert injected == len(double.stats.received)  # every request key met the fault once
    assert "probe-json_schema" in double.stats.received  # structured-output detection ("auto") probed once
    if fault == "malformed":  # the probe checks the HTTP status only, not its content
        assert result.stats["invalid_answers"] == injected - 1
        assert set(table["attempts"]) == {2}
    elif fault == "truncated":  # cut at max_tokens: never an invalid answer; re-sent once with twice the budget
        assert result.stats["invalid_answers"] == 0
        assert sum(result.stats["truncated"].values()) == injected - 1
        assert set(table["attempts"]) == {2}
        with sqlite3.connect(run.cache_path) as db:
            sent = dict(db.execute("SELECT slot_id, json_extract(request, '$.max_tokens') FROM requests "
                                   "WHERE kind = 'example'"))
        plan = pl.read_parquet(run.root / "plan" / "sw.parquet")
        registry = load_registry()
        for row in plan.iter_rows(named=True):
            target = registry.get(row["target_language"]) if row["target_language"] else None
            first = budget.completion_budget(row["family"], row, registry.get("sw"), target, budget.table_for(local=False))
            assert sent[row["slot_id"]] == 2 * first, row["slot_id"]
    elif fault == "wrong_language":
        # recorded, not hidden: the rows are kept as ok and their text is English; the filter rejects them
        english = set((REPO.parent / "shared/data/tatoeba/tatoeba.deu-eng.eng").read_text().splitlines())
        assert table.filter(pl.col("family") == "sts")["S1"].is_in(list(english)).all()
    else:
        expected = {"429": "429", "500": "5xx", "slow": "timeout", "drop": "connection"}[fault]
        assert result.stats["errors"][expected] == injected


def test_invalid_answers_are_recorded_failed_with_raw_text(double, tmp_path):
    double.set_faults(Faults(rate_malformed=1.0))
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=4,
                                     max_attempts=2)
    run_generate(run, config, registry)
    table = generated(run, "sw")
    assert table.height == 4 and set(table["status"]) == {"failed"}
    # two-step slots fail because their brainstorm failed; one-step slots after 2 invalid samples each
    one_step = table.filter(pl.col("family").is_in(["sts", "bitext"]))
    two_step = table.filter(~pl.col("family").is_in(["sts", "bitext"]))
    assert one_step.height and two_step.height
    assert set(one_step["attempts"]) == {2} and one_step["error"].str.contains("invalid answer").all()
    assert one_step["raw_response"].str.starts_with("Sure! Here is").all()  # raw text kept
    assert two_step["error"].str.contains("brainstorm step failed.*invalid answer").all()
    # failed is final: a re-run sends nothing unless --retry-failed (the table is lost, so the stage runs)
    sent = double.stats.total
    run.table_path("generated", "sw").unlink()
    rerun = run_generate(run, config, registry)
    assert not rerun.current and double.stats.total == sent
    assert generated(run, "sw").equals(table)
    double.set_faults(Faults())
    run_generate(run, config, registry, retry_failed=True)
    assert set(generated(run, "sw")["status"]) == {"ok"}


def test_transport_errors_past_the_retry_budget_are_resent_on_rerun(double, tmp_path):
    double.set_faults(Faults(rate_500=1.0))
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=3, max_retries=1)
    result = run_generate(run, config, registry)
    table = generated(run, "sw")
    assert set(table["status"]) == {"failed"} and result.stats["unfinished"] == 3
    assert run.stage_entry("generate")["status"] == "partial"
    double.set_faults(Faults())
    run_generate(run, config, registry)
    assert set(generated(run, "sw")["status"]) == {"ok"}
    assert run.stage_entry("generate")["status"] == "complete"


def test_sigkill_mid_run_then_resume_loses_nothing_and_resends_nothing(double, tmp_path):
    double.set_faults(Faults(latency=0.1, rate_429=0.05, retry_after=0.01))
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw", "de"), quota=40,
                                     concurrency=2)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "generate", str(run.root)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if run.cache_path.exists():
            try:
                statuses = list(cache_rows(run).values())
            except sqlite3.OperationalError:  # the subprocess is still creating the cache's tables
                continue
            if statuses.count("ok") >= 25:
                break
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    finished_before = {k for k, s in cache_rows(run).items() if s in ("ok", "failed")}
    assert 25 <= len(finished_before) < 80 + 8, "the kill should land mid-run"
    received_before = dict(double.stats.received)
    double.set_faults(Faults())
    run_generate(run, config, registry)
    resent = {k for k in finished_before if double.stats.received[k] != received_before.get(k, 0)}
    assert resent == set()  # no finished request sent again
    rows = pl.concat([generated(run, "sw"), generated(run, "de")])
    assert rows.height == 80 and rows["slot_id"].n_unique() == 80 and set(rows["status"]) == {"ok"}
    # every request that ever reached the double is either finished now or was in flight at the kill
    assert set(cache_rows(run).values()) == {"ok"}


def test_dry_run_sends_nothing_and_max_cost_stops_spending(double, tmp_path):
    prices = {"double": {"input": 1000.0, "output": 1000.0}}
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=10,
                                     prices=prices, concurrency=1)
    dry = run_generate(run, config, registry, dry_run=True)
    assert double.stats.total == 0
    plan = pl.read_parquet(run.root / "plan" / "sw.parquet")
    two_step = {f for f in plan["family"] if FAMILIES[f].brainstorm}
    assert dry.stats["requests"] == 10 + len(two_step) and dry.stats["brainstorm_requests"] == len(two_step)
    assert dry.stats["est_cost_usd"] > 0 and dry.stats["est_completion_tokens"] >= 10 * 360
    _, capped, _ = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=10, prices=prices,
                            concurrency=1, max_cost_usd=1.0)
    result = run_generate(run, capped, registry)
    assert result.stats["budget_hit"] and result.stats["unfinished"] > 0
    table = generated(run, "sw")
    assert table.height == 10
    assert table.filter(pl.col("status") == "failed")["error"].str.contains("max-cost").all()
    assert run.stage_entry("generate")["status"] == "partial"
    spent = table["cost_usd"].sum()
    # generated/ carries the example requests' cost; brainstorm requests are counted in the stage stats
    assert spent + result.stats["brainstorm_cost_usd"] == pytest.approx(result.stats["cost_usd"])
    assert result.stats["cost_usd"] >= 1.0
    ok = table.filter(pl.col("status") == "ok")
    assert ok.height < 10 and (ok["prompt_tokens"] > 0).all()
    # the cap is on the run's total: resuming with the same cap sends nothing more
    sent = double.stats.total
    again = run_generate(run, capped, registry)
    assert double.stats.total == sent and again.stats["budget_hit"]
    run_generate(run, config, registry)
    final = generated(run, "sw")
    assert set(final["status"]) == {"ok"}
    assert result.stats["total_cost_usd"] <= final["cost_usd"].sum() + result.stats["brainstorm_cost_usd"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENAI_API_KEY="wrong")
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_endpoint_problems_give_one_clear_line(shared_data, tmp_path):
    with OpenAIDouble(shared_data, api_key="right") as guarded, OpenAIDouble(shared_data) as open_double:
        run, config, registry = make_run(tmp_path / "run", open_double.base_url, languages=("sw",), quota=3)
        # through the console script: exit status 2, one line on stderr, no traceback
        for extra, needle in ((["--base-url", open_double.base_url, "--model", "no-such-model"], "404"),
                              (["--base-url", "not a url"], "not a URL")):
            proc = _cli("generate", str(run.root), *extra)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2, (extra, proc.stderr)
            assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, (extra, proc.stderr)
            assert (run.stage_entry("generate") or {}).get("status") != "running"  # nothing runs any more
        # in process: the same errors as WorkbenchError with a one-line message naming the fix
        cases = [
            (open_double.base_url.removesuffix("/v1") + "/wrong/v1", "404 not found"),
            (guarded.base_url, "401 unauthorized"),
            ("http://127.0.0.1:9/v1", "cannot reach the endpoint"),
        ]
        for url, needle in cases:
            bad = config.model_copy(update={"generate": config.generate.model_copy(update={"base_url": url})})
            with pytest.raises(WorkbenchError) as caught:
                run_generate(run, bad, registry)
            line = caught.value.line()
            assert needle in line and "\n" not in line and url.split("/v1")[0] in line, line
        assert open_double.stats.answered.total() == 0  # nothing was generated by the failed attempts


def test_batch_mode_round_trip(double, tmp_path):
    from workbench.generate.batch import batch_status
    from workbench.generate.stage import collect

    double.set_faults(Faults(rate_500=0.1, rate_malformed=0.1, seed=3))
    run, config, registry = make_run(tmp_path / "run", double.base_url, quota=10, batch_max_requests=6,
                                     prices={"double": {"input": 1.0, "output": 2.0}})
    first = run_generate(run, config, registry, batch=True)
    plans = pl.concat([pl.read_parquet(p) for p in sorted((run.root / "plan").glob("*.parquet"))])
    brainstorms = plans.filter(pl.col("family").is_in(["short_long", "long_short", "short_short", "long_long"]))
    n_brainstorms = brainstorms.select("language", "family").unique().height
    assert first.outputs == {} and sum(first.stats["batch_jobs"].values()) == n_brainstorms  # step 1 only
    assert all(n <= 6 for n in first.stats["batch_jobs"].values())
    for _ in range(10):
        time.sleep(0.2)
        assert all(row["status"] in ("in_progress", "completed") for row in batch_status(run, config))
        result = collect(run, config, registry)
        if result.outputs:
            break
    else:
        pytest.fail("batch mode never finished")
    rows = pl.concat([generated(run, "sw"), generated(run, "en")])
    assert rows.height == 20 and set(rows["status"]) == {"ok"}
    assert run.stage_entry("generate")["status"] == "complete"
    # batch price: tokens at half the list price
    total = rows["prompt_tokens"].sum() * 1.0 / 1e6 * 0.5 + rows["completion_tokens"].sum() * 2.0 / 1e6 * 0.5
    assert rows["cost_usd"].sum() == pytest.approx(total)
    # every answered key was answered exactly once, except invalid samples that were resubmitted
    assert max(double.stats.answered.values()) <= 1 + sum(double.stats.faults["malformed"].values())


def test_missing_plan_is_one_clear_error(tmp_path):
    run, config = resolve_run_config(tmp_path / "empty", None, {"generate": {"base_url": "http://127.0.0.1:9/v1"}})
    with pytest.raises(WorkbenchError, match="no plan tables"):
        run_generate(run, config, load_registry())


def test_concurrency_is_bounded(double, tmp_path):
    double.set_faults(Faults(latency=0.1))
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=24, concurrency=5)
    run_generate(run, config, registry)
    assert double.stats.max_in_flight == 5  # enough work to fill every slot, never more


def test_auto_structured_output_falls_back_when_the_endpoint_rejects_schemas(double, tmp_path):
    original = double._chat

    async def no_schemas(headers, body):  # behave like a server without json_schema support
        if b'"json_schema"' in body:
            return 400, {"error": {"message": "response_format json_schema not supported"}}, {}
        return await original(headers, body)

    double._chat = no_schemas
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=3)
    result = run_generate(run, config, registry)
    assert result.stats["structured_output"] == "llamacpp"
    assert set(generated(run, "sw")["status"]) == {"ok"}
    sent = double.stats.total
    run.table_path("generated", "sw").unlink()  # the stage runs again, from the cache
    rerun = run_generate(run, config, registry)  # the detected mode is remembered: no new probe, no request
    assert not rerun.current and double.stats.total == sent
    assert rerun.stats["structured_output"] == "llamacpp"


def test_corrupt_cache_is_one_clear_error_and_is_left_alone(double, tmp_path):
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=2)
    run.cache_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(WorkbenchError, match="cache.sqlite: the request cache is damaged .file is not a database.*--salvage-cache"):
        run_generate(run, config, registry)
    assert run.cache_path.read_bytes() == b"this is not a database" * 100
    assert double.stats.total == 0


def test_broken_or_missing_template_names_the_file(tmp_path, monkeypatch):
    from workbench.errors import ConfigError

    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "sts_example.jinja2").write_text("Write {{ unit } in {{ language }}.")
    monkeypatch.setenv("WORKBENCH_PROMPTS", str(folder))
    registry = load_registry()
    slot = {"slot_id": "de-sts-0", "language": "de", "family": "sts", "unit": "sentence"}
    with pytest.raises(ConfigError, match=r"sts_example.jinja2: template syntax error line 1"):
        prompts.example_messages(slot, None, registry)
    with pytest.raises(ConfigError, match=r"bitext_example.jinja2: prompt template not found"):
        prompts.example_messages({**slot, "family": "bitext", "target_language": "en"}, None, registry)
    (folder / "sts_example.jinja2").write_text("Write a {{ unit }} at {{ no_such_placeholder }}.")
    prompts._environment.cache_clear()
    with pytest.raises(ConfigError, match="template variable missing: 'no_such_placeholder'"):
        prompts.example_messages(slot, None, registry)


# -- generation fidelity ---------------------------------------------------------------------------
def _example_prompt(family: str, **placeholders) -> str:
    registry = load_registry()
    slot = {"slot_id": f"de-{family}-00000", "language": "de", "family": family, "seed": 1, "target_language": "en",
            **{k: v[0] for k, v in FAMILIES[family].placeholders.items()}, **placeholders}
    return prompts.example_messages(slot, "Given a question, find the answer.", registry)[0]["content"]


def test_prompts_keep_the_papers_meaning():
    short_long = _example_prompt("short_long", num_words="300")
    assert "Every document is at least 300 words long" in short_long  # all documents, "at least"
    assert "less well or less completely" in short_long and "not actually answer" not in short_long
    assert "some useful information" in short_long
    for family in ("short_short", "long_long"):
        text = _example_prompt(family)
        assert "independently of each other" in text and "word overlap" in text, family
    assert "at least 300 words" in _example_prompt("long_long")
    assert "share some words" in _example_prompt("sts")
    bitext = _example_prompt("bitext")
    assert "share some words" in bitext and "grammatical, fluent" in bitext
    assert all(kind in bitext for kind in ("key word or a number wrong", "leaves out", "adds content"))


def test_budgets_grow_with_num_words_and_script_cost_and_stay_within_the_endpoint():
    registry = load_registry()
    en, te, ja = registry.get("en"), registry.get("te"), registry.get("ja")
    sized = [budget.completion_budget("short_long", {"num_words": n}, en) for n in ("50", "200", "500")]
    assert sized == sorted(sized) and sized[0] < sized[-1]
    assert budget.completion_budget("short_long", {"num_words": "500"}, en) > 1024  # the old flat budget
    assert budget.completion_budget("long_short", {"num_words": "at least 200"}, te) > \
        budget.completion_budget("long_short", {"num_words": "at least 200"}, en)
    assert budget.completion_budget("sts", {"unit": "passage"}, en) > budget.completion_budget("sts", {"unit": "phrase"}, en)
    # bitext: the costlier language of the pair sets the budget
    assert budget.completion_budget("bitext", {"unit": "sentence"}, en, te) == \
        budget.completion_budget("bitext", {"unit": "sentence"}, te, en)
    assert budget.tokens_per_word(ja, {"Jpan": 1.0}) == 1.0  # generate.tokens_per_word overrides
    # remote endpoints use o200k's (measured) rates: cheaper than SmolLM2's outside Latin script
    remote = budget.table_for(local=False)
    assert budget.tokens_per_word(te, remote) < budget.tokens_per_word(te) and remote["Telu"] > remote["Latn"]
    assert budget.table_for(local=False, overrides={"Telu": 9.0})["Telu"] == 9.0
    assert budget.larger_budget(1000, 1500) == 1500 and budget.larger_budget(1500, 1500) is None


def test_requests_fit_the_endpoints_context_window(double, tmp_path):
    """The embedded server's 2,048-token context: prompt + max_tokens never exceed it."""
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("te", "de"), quota=20,
                                     context_tokens=2048)
    run_generate(run, config, registry)
    with sqlite3.connect(run.cache_path) as db:
        bodies = [json.loads(text) for (text,) in db.execute("SELECT request FROM requests")]
    assert bodies
    for body in bodies:
        assert budget.prompt_tokens_upper(body["messages"]) + body["max_tokens"] <= 2048
    # without a context limit, long Telugu documents get far more than the old flat 1,024
    run2, config2, _ = make_run(tmp_path / "run2", double.base_url, languages=("te",), quota=20)
    dry = run_generate(run2, config2, registry, dry_run=True)
    low, high = dry.stats["max_tokens_by_family"]["short_long"]
    assert high > 4 * 1024 and high <= config2.generate.max_tokens_cap


def test_truncated_answers_are_resent_once_larger_then_recorded_truncated(double, tmp_path):
    from workbench.audit import family_generation_stats

    double.set_faults(Faults(rate_truncated=1.0))  # every answer is cut (finish_reason "length")
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=6,
                                     structured_output="json_schema")
    result = run_generate(run, config, registry)
    table = generated(run, "sw")
    one_step = table.filter(pl.col("family").is_in(["sts", "bitext"]))
    assert one_step.height and set(one_step["status"]) == {"failed"}
    assert one_step["error"].str.starts_with("truncated: the answer was cut at max_tokens=").all()
    assert one_step["error"].str.contains("again after one re-send with a larger budget").all()
    assert set(one_step["attempts"]) == {2}  # the first sample and one larger re-send, no more
    assert result.stats["invalid_answers"] == 0  # never counted as malformed
    with sqlite3.connect(run.cache_path) as db:
        sent = dict(db.execute("SELECT slot_id, json_extract(request, '$.max_tokens') FROM requests"))
    for row in one_step.iter_rows(named=True):
        target = registry.get(row["target_language"]) if row["target_language"] else None
        remote = budget.table_for(local=False)  # the double is a remote endpoint: o200k's tokens per word
        assert sent[row["slot_id"]] == 2 * budget.completion_budget(row["family"], row, registry.get("sw"), target, remote)
    by_family = family_generation_stats(table)
    for family in ("sts", "bitext"):
        if family in by_family:
            assert by_family[family]["truncated"] == by_family[family]["slots"]


def test_brainstorm_rounds_keep_each_task_to_a_few_examples(double, tmp_path):
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("de",), quota=120,
                                     max_task_uses=2)
    run_generate(run, config, registry)
    table = generated(run, "de")
    tasks = run.read_table("tasks", "de", TASKS)
    plan = run.read_table("plan", "de", __import__("workbench.tables", fromlist=["PLAN"]).PLAN)
    for (family,), group in table.filter(pl.col("task").is_not_null()).group_by("family"):
        slots = plan.filter(pl.col("family") == family).height
        rounds = prompts.brainstorm_rounds(slots, 2)
        family_tasks = tasks.filter(pl.col("family") == family)["task"]
        assert family_tasks.n_unique() == family_tasks.len()  # merged rounds, duplicates dropped
        assert family_tasks.len() > prompts.N_TASKS or rounds == 1
        assert group["task"].value_counts()["count"].max() <= 2, family
    # the dry run and a re-run agree with what was sent: every round is cached, nothing is sent again
    sent = double.stats.total
    run.table_path("generated", "de").unlink()  # the stage runs again, from the cache
    rerun = run_generate(run, config, registry)
    assert not rerun.current and double.stats.total == sent
    assert generated(run, "de").equals(table)


def test_dry_run_is_sized_per_family_and_priced_for_the_batch_api(tmp_path):
    prices = {"double": {"input": 1.0, "output": 2.0}}
    run, config, registry = make_run(tmp_path / "run", "http://127.0.0.1:9/v1", languages=("en", "te"), quota=30,
                                     prices=prices)
    direct = run_generate(run, config, registry, dry_run=True)
    batch = run_generate(run, config, registry, dry_run=True, batch=True)
    assert batch.stats["batch"] and not direct.stats["batch"]
    assert batch.stats["est_cost_usd"] == pytest.approx(direct.stats["est_cost_usd"] * 0.5, rel=1e-3)
    per_family = direct.stats["est_completion_by_family"]
    plan = pl.concat([run.read_table("plan", c, __import__("workbench.tables", fromlist=["PLAN"]).PLAN)
                      for c in ("en", "te")])
    counts = dict(plan.group_by("family").len().iter_rows())
    if counts.get("short_long") and counts.get("short_short"):  # long documents cost more than short texts
        assert per_family["short_long"] / counts["short_long"] > per_family["short_short"] / counts["short_short"]
    assert direct.stats["est_completion_tokens"] != 360 * direct.stats["example_requests"] + \
        600 * direct.stats["brainstorm_requests"]


# -- honest endings --------------------------------------------------------------------------------
class _NotAnAPI:
    """A plain HTTP server that is not an OpenAI API (a web page for everything, or http.server)."""

    def __init__(self, html: bool):
        import http.server
        import threading

        self.requests = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _page(self):
                outer.requests += 1
                data = b"<html><body>Welcome to my blog</body></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if html:
                    return self._page()
                outer.requests += 1
                return super().do_GET()

            def do_POST(self):
                if html:
                    length = int(self.headers.get("content-length", 0))
                    self.rfile.read(length)
                    return self._page()
                outer.requests += 1
                self.send_error(501, "Unsupported method ('POST')")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("html", [False, True])
def test_a_server_that_is_not_an_openai_api_fails_at_once(tmp_path, html):
    server = _NotAnAPI(html)
    try:
        run, config, registry = make_run(tmp_path / "run", server.base_url, languages=("sw",), quota=2)
        with pytest.raises(WorkbenchError) as caught:
            run_generate(run, config, registry)
        line = caught.value.line()
        assert "not an OpenAI-compatible API" in line and "ending in /v1" in line and "\n" not in line, line
        assert server.requests == 2  # GET /models and one POST /chat/completions, no retries
        assert not run.cache_path.exists() or cache_rows(run) == {}
        assert (run.stage_entry("generate") or {}).get("status") != "running"
        proc = _cli("generate", str(run.root))
        assert proc.returncode == 2 and "not an OpenAI-compatible API" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        server.close()


def test_transport_failures_exit_2_with_a_summary_and_the_resume_command(double, tmp_path):
    double.set_faults(Faults(rate_500=1.0))
    run, config, registry = make_run(tmp_path / "run", double.base_url, languages=("sw",), quota=3, max_retries=0,
                                     structured_output="json_schema")
    proc = _cli("generate", str(run.root))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "generation incomplete" in last and "gave up on transport errors (5xx=" in last, last
    assert f"re-run 'workbench generate {run.root}' to resume" in last, last
    assert "Traceback" not in proc.stderr
    double.set_faults(Faults())
    proc = _cli("generate", str(run.root))
    assert proc.returncode == 0, proc.stderr
    assert set(generated(run, "sw")["status"]) == {"ok"}


def test_the_demo_model_is_never_used_silently():
    from workbench.config import RunConfig
    from workbench.generate.engine import generation_notice

    default = RunConfig.model_validate({"run": {"name": "x"}})
    assert default.generate.base_url == "local"
    assert "embedded demo model SmolLM2-135M" in generation_notice(default)
    remote = RunConfig.model_validate({"run": {"name": "x"}, "generate": {"base_url": "http://h/v1"}})
    assert generation_notice(remote) is None
