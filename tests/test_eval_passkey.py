"""The personalized passkey probe: documents in the encoder's tokens with the needle at a set depth,
top-1 scoring, the eval tables, the report's section recomputed from per_query.parquet, and the
RoPE base / sliding window overrides on a tiny random Mistral.

Filler comes from the Tatoeba files shipped in examples/data/tatoeba; the encoder is the shipped MiniLM.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench import conditions
from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.eval import passkey
from workbench.eval.stage import run_eval
from workbench.languages import load_registry
from workbench.report.passkey import effective_index, passkey_cells, passkey_section, tier_contrasts
from workbench.report.stage import build_report
from workbench.report.tiers import CANNOT_SAY, too_few_languages
from workbench.run import Run
from workbench.tables import EVAL_PER_QUERY, EVAL_RESULTS

from conftest import REPO

TATOEBA = REPO / "examples" / "data" / "tatoeba"
REGISTRY = load_registry()


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from workbench.encoder import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path()))


@pytest.fixture(scope="module")
def fillers():
    return passkey.folder_filler(TATOEBA, REGISTRY, ["en", "de", "ja", "sw", "am"])


def _config(**grid) -> RunConfig:
    section = {"task": "passkey", "model": "minilm", "data_dir": str(TATOEBA), "languages": ["en", "am"],
               "passkey": {"lengths": [48, 96], "depths": [0, 100], "queries": 6, "candidates": 12, **grid}}
    return RunConfig.model_validate({"run": {"name": "t"}, "eval": section})


# --- documents ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["en", "ja", "am"])
@pytest.mark.parametrize("depth", [0.0, 50.0, 100.0])
def test_a_document_holds_the_length_in_encoder_tokens_with_the_needle_at_its_depth(code, depth, fillers, minilm_tokenizer):
    counter = passkey.TokenCounter(minilm_tokenizer)
    language = REGISTRY.get(code)
    needle, other = "ZZNEEDLE 12345", "QQ 99"
    joiner = "" if language.unspaced else " "
    for length in (64, 200):
        document, second = passkey.build_documents(fillers[code].units, joiner, [needle, other], length, depth, counter,
                                                   random.Random(1))
        assert document.replace(needle, other) == second  # one filler: the candidates differ in their needle only
        tokens = counter.count(document)
        assert length - 2 <= tokens <= length, (code, length, tokens)
        where = document.index(needle)
        if depth == 0:
            assert where == 0
        elif depth == 100:
            assert document.endswith(needle)
        else:  # at a sentence boundary near the middle, counted in tokens
            before = counter.count(document[:where])
            assert abs(before - (length - counter.count(needle)) / 2) <= 0.2 * length
    # filler only: no needle in the filler texts themselves
    assert not any(needle in unit for unit in fillers[code].units)


def test_a_needle_longer_than_the_length_is_left_out(fillers, minilm_tokenizer):
    counter = passkey.TokenCounter(minilm_tokenizer)
    assert passkey.build_documents(fillers["en"].units, " ", ["word " * 40], 20, 50, counter, random.Random(0)) is None


def test_cells_are_seeded_per_cell_with_distinct_people_in_the_language_script(fillers, minilm_tokenizer):
    counter = passkey.TokenCounter(minilm_tokenizer)
    am, en = REGISTRY.get("am"), REGISTRY.get("en")

    def cell(code, seed=13, length=80):
        language = REGISTRY.get(code)
        return passkey.build_cell(fillers[code], language, passkey.needle_for(language), length, 50.0,
                                  candidates=100, queries=50, seed=seed, counter=counter)

    first, again, other = cell("am"), cell("am"), cell("am", seed=14)
    assert first.documents == again.documents and first.queries == again.queries
    assert first.documents != other.documents
    assert len(set(first.queries)) == 50 and len(set(first.answers)) == 50
    import regex

    assert all(regex.search(r"\p{Ethiopic}", q) for q in first.queries)
    assert passkey.needle_for(am).template == "{name}: {passkey}"
    assert passkey.needle_for(am).template_label == passkey.NEUTRAL
    assert passkey.needle_for(am).names_label.startswith("Ethi: synthetic")
    english = cell("en")
    assert passkey.needle_for(en).template_label.startswith("language: ")
    # each document carries its own person and passkey: the asked document names the asked person,
    # and no other candidate shares a part of that name
    names = []
    for query, answer in zip(english.queries, english.answers):
        name = query.removeprefix("What is the pass key for ").removesuffix("?")
        names.append(name)
        assert f"{name}'s pass key is" in english.documents[answer]
        for part in name.split():
            assert sum(re.search(rf"\b{part}\b", d) is not None for d in english.documents) == 1, part
    passkeys = [re.search(r"pass key is (\d{5})", d).group(1) for d in english.documents]
    assert len(set(passkeys)) == 100
    japanese = passkey.needle_for(REGISTRY.get("ja"))
    assert japanese.separator == "\u30fb" and japanese.names_label.startswith("Jpan: ")
    # a script with no syllables in the needles file: romanized names, labelled so
    hindi = passkey.needle_for(REGISTRY.get("hi"))
    assert hindi.template_label == passkey.NEUTRAL and hindi.names_label == passkey.ROMANIZED
    assert all(n.isascii() for n in passkey.synthetic_names(random.Random(3), 100, hindi.syllables))


def test_a_needles_file_without_a_passkey_placeholder_is_one_error(tmp_path: Path):
    bad = tmp_path / "needles.toml"
    bad.write_text('[neutral]\ntemplate = "{name}"\nquery = "{name}"\n', encoding="utf-8")
    with pytest.raises(WorkbenchError) as err:
        passkey.load_needles(bad)
    assert str(bad) in str(err.value) and "{passkey}" in str(err.value)


def test_top1_counts_a_tie_as_a_miss():
    docs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.1], [0.1, 1.0]])
    assert passkey.top1_scores(queries, docs, [0, 2]) == [0.0, 100.0]
    assert passkey.top1_scores(np.array([[0.0, 1.0]]), docs, [2]) == [100.0]


def test_the_grid_is_checked_at_load():
    with pytest.raises(ValueError, match="queries"):
        _config(queries=20, candidates=10)
    with pytest.raises(ValueError, match="depths"):
        _config(depths=[120])
    with pytest.raises(ValueError, match="lengths"):
        _config(lengths=[4])


def test_folder_without_a_language_names_what_it_has(tmp_path: Path):
    (tmp_path / "de.txt").write_text("Hallo Welt.\n", encoding="utf-8")
    with pytest.raises(WorkbenchError) as err:
        passkey.folder_filler(tmp_path, REGISTRY, ["de", "sw"])
    assert "sw" in str(err.value) and "de" in str(err.value) and str(tmp_path) in str(err.value)


# --- eval and report ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Run:
    run = Run.create(tmp_path_factory.mktemp("passkey") / "run")
    run_eval(run, _config(), REGISTRY)
    return run


def test_eval_writes_one_row_per_cell_and_the_per_query_scores_behind_it(evaluated: Run):
    results = evaluated.read_table("eval", "results", EVAL_RESULTS)
    per_query = evaluated.read_table("eval", "per_query", EVAL_PER_QUERY)
    assert set(results["task"]) == {passkey.TASK_NAME} and set(results["metric"]) == {"accuracy"}
    assert set(results["dataset"]) == {"passkey-en-tatoeba", "passkey-am-tatoeba"}
    assert results.height == 2 * 2 * 2  # languages x lengths x depths
    assert set(results["context_tokens"]) == {48, 96} and set(results["needle_depth"]) == {0.0, 100.0}
    assert results["rope_theta"].null_count() == results.height
    assert set(results["n_queries"]) == {6} and set(results["n_docs"]) == {12}
    assert set(per_query["score"]) <= {0.0, 100.0} and per_query.height == 8 * 6
    means = per_query.group_by("language", "context_tokens", "needle_depth").agg(pl.col("score").mean())
    joined = results.join(means, on=["language", "context_tokens", "needle_depth"])
    assert joined.height == 8 and (joined["value"] - joined["score"]).abs().max() < 1e-3  # values rounded as every task's
    # characters and words per language: Amharic packs fewer characters into the same tokens here
    facts = {(r["language"], r["context_tokens"]): r for r in results.filter(pl.col("needle_depth") == 0).iter_rows(named=True)}
    assert facts[("en", 96)]["context_words_median"] > facts[("en", 48)]["context_words_median"] > 0
    assert facts[("am", 96)]["context_chars_median"] != facts[("en", 96)]["context_chars_median"]
    assert facts[("am", 96)]["needle_template"] == passkey.NEUTRAL
    assert facts[("en", 96)]["needle_template"].startswith("language: ")
    # the condition columns every results row carries: the probe's own documents, MiniLM's 256 tokens, no instruction
    # (MiniLM takes none), zero-shot (nothing trains on the probe); a revision per filler language
    assert set(results["benchmark"]) == {"passkey"} and set(results["task_kind"]) == {"passkey"}
    assert set(results["corpus"]) == {"local"} and set(results["max_length"]) == {256}
    assert set(results["instruction"]) == {"none"} and set(results["regime"]) == {conditions.ZERO_SHOT}
    revisions = dict(results.select("language", "revision").unique().iter_rows())
    assert len(set(revisions.values())) == 2 and all(r.startswith("sha256:") for r in revisions.values())
    assert per_query["cluster"].null_count() == 0


def test_a_second_grid_keeps_the_first_and_other_tasks_rows(evaluated: Run, tmp_path: Path):
    import shutil

    run = Run(shutil.copytree(evaluated.root, tmp_path / "copy"))
    before = run.read_table("eval", "results", EVAL_RESULTS)
    run_eval(run, RunConfig.model_validate({"run": {"name": "t"}, "eval": {
        "task": "passkey", "model": "minilm", "data_dir": str(TATOEBA), "languages": ["en"],
        "passkey": {"lengths": [48], "depths": [50], "queries": 6, "candidates": 12}}}), REGISTRY)
    after = run.read_table("eval", "results", EVAL_RESULTS)
    assert after.height == before.height + 1
    again = run.read_table("eval", "per_query", EVAL_PER_QUERY)
    assert again.height == (before.height + 1) * 6


def test_lengths_beyond_the_window_are_measured_at_the_window(tmp_path: Path):
    run = Run.create(tmp_path / "run")
    run_eval(run, _config(lengths=[32, 5000], depths=[100], queries=2, candidates=4, max_length=64), REGISTRY)
    results = run.read_table("eval", "results", EVAL_RESULTS)
    assert set(results["context_tokens"]) == {32, 62}  # 64 tokens read, CLS and SEP among them
    import json

    source = json.loads((run.root / "eval" / "data_sources.json").read_text())["passkey-en-tatoeba"]
    assert source["lengths_asked"] == [32, 5000] and source["lengths_measured"] == [32, 62]
    assert source["encoder_window"] == 64


def test_report_section_is_recomputed_from_per_query(evaluated: Run, tmp_path: Path):
    out = tmp_path / "report"
    build_report(out, [evaluated.root / "eval" / "results.parquet"], registry=REGISTRY)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="passkey"' in html and html.count('class="passkey-row') == 2
    table = pl.read_parquet(out / "passkey.parquet")
    per_query = evaluated.read_table("eval", "per_query", EVAL_PER_QUERY)
    pooled = table.filter(pl.col("needle_depth").is_null())
    assert pooled.height == 4  # languages x lengths
    for rec in pooled.iter_rows(named=True):
        scores = per_query.filter((pl.col("language") == rec["language"]) & (pl.col("context_tokens") == rec["context_tokens"]))
        assert rec["accuracy"] == pytest.approx(scores["score"].mean())
        assert rec["n_queries"] == scores.height == 12
        assert rec["ci_low"] <= rec["accuracy"] <= rec["ci_high"]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "passkey" in summary.lower() and "- am (low)" in summary and "- en (high)" in summary
    # the other sections never see passkey rows
    measured = pl.read_parquet(out / "measured.parquet")
    assert passkey.TASK_NAME not in set(measured["task"])


def test_a_tier_of_fewer_than_three_languages_cannot_say_in_the_report(evaluated: Run, tmp_path: Path):
    """One high-tier (en) and one low-tier language (am): the tier contrast says "cannot say" with the
    languages per tier, by the tier question's own rule, and shows no difference."""
    out = tmp_path / "report"
    build_report(out, [evaluated.root / "eval" / "results.parquet"], registry=REGISTRY)
    why = too_few_languages({"high": ["en"], "low": ["am"]}, what="measured")
    assert "the high tier holds 1 language(s) measured (en) and the low tier holds 1 language(s) measured (am)" in why
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"- Effective length, low tier minus high tier, in tokens: cannot say: {why}." in summary
    html = (out / "index.html").read_text(encoding="utf-8")
    contrast = html[html.index('<ul class="passkey-contrast">'):]
    contrast = contrast[:contrast.index("</ul>")]
    assert f"in tokens:\ncannot say: {why}</li>" in contrast and "[" not in contrast  # no interval anywhere


def test_rows_measured_under_other_conditions_are_never_pooled(evaluated: Run, tmp_path: Path):
    """Real evals into one run: the first grid (seed 13, MiniLM's 256 tokens), a longer length on documents
    placed with another seed (another revision of the same dataset), and a length read with max_length 64.
    The report pools none of them with the others: max_length makes its own setting, and a language with
    two revisions gets one row per revision, named, and stays out of the tier contrast."""
    import shutil

    run = Run(shutil.copytree(evaluated.root, tmp_path / "run"))
    grid = {"depths": [0, 100], "queries": 6, "candidates": 12}
    for extra in ({"lengths": [192], "seed": 14}, {"lengths": [60], "max_length": 64}):
        run_eval(run, RunConfig.model_validate({"run": {"name": "t"}, "eval": {
            "task": "passkey", "model": "minilm", "data_dir": str(TATOEBA), "languages": ["en"],
            "passkey": {**grid, **extra}}}), REGISTRY)
    results = run.read_table("eval", "results", EVAL_RESULTS)
    en = results.filter(pl.col("language") == "en")
    assert set(en["dataset"]) == {"passkey-en-tatoeba"} and en["revision"].n_unique() == 2
    assert set(en["max_length"]) == {256, 64}
    first, second = (en.filter(pl.col("context_tokens") == n)["revision"][0] for n in (48, 192))
    assert first != second

    out = tmp_path / "report"
    build_report(out, [run.root / "eval" / "results.parquet"], registry=REGISTRY)
    table = pl.read_parquet(out / "passkey.parquet")
    # every row carries its conditions; no row mixes two revisions or two max_lengths
    assert set(table.filter(pl.col("language") == "en")["revision"]) == {first, second}
    pooled = table.filter(pl.col("needle_depth").is_null() & (pl.col("language") == "en"))
    assert sorted(pooled.select("context_tokens", "max_length").rows()) == [(48, 256), (60, 64), (96, 256), (192, 256)]
    assert set(pooled["n_queries"]) == {12}
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<h3>minilm, max_length 256</h3>" in html and "<h3>minilm, max_length 64</h3>" in html
    section = html[html.index("<h3>minilm, max_length 256</h3>"):html.index("<h3>minilm, max_length 64</h3>")]
    assert section.count('data-language="en"') == 2 and section.count('data-language="am"') == 1
    assert f"(revision {first})" in section and f"(revision {second})" in section
    assert f"en: 2 sets of documents (revision: {first} vs {second}): not pooled" in section
    # en is out of the contrast: the high tier has no language left, so it cannot say
    assert "low tier (am) &minus; high tier (none), in tokens:\ncannot say: the high tier holds 0 language(s) measured" in section
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"- en (high; revision {first}): 48 tok" in summary and f"- en (high; revision {second}): 192 tok" in summary


def _synthetic(accuracy: dict[str, dict[int, float]], words: dict[str, float], n: int = 50) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Results and per-query rows with exact accuracies (n queries per cell, one depth)."""
    rows, scores = [], []
    for code, by_length in accuracy.items():
        for length, value in by_length.items():
            key = {"system": "s", "model": "m", "task": passkey.TASK_NAME, "dataset": f"passkey-{code}-x", "language": code,
                   "split": "test", "metric": "accuracy", "context_tokens": length, "needle_depth": 50.0,
                   "rope_theta": None, "sliding_window": None}
            hits = round(value * n / 100)
            rows.append({**key, "value": value, "n_queries": n, "n_docs": 100, "source": "measured", "created_at": "",
                         "context_chars_median": 5.0 * length, "context_words_median": words[code] * length,
                         "needle_template": passkey.NEUTRAL, "needle_names": passkey.ROMANIZED})
            scores.extend({**key, "query_id": f"q{i}", "score": 100.0 if i < hits else 0.0} for i in range(n))
    return pl.DataFrame(rows, schema=EVAL_RESULTS), pl.DataFrame(scores, schema=EVAL_PER_QUERY)


def test_effective_length_and_the_tier_contrast():
    assert effective_index(np.array([[100, 95, 80], [80, 100, 100], [99, 99, 99]])).tolist() == [2, 0, 3]
    words = {"en": 0.7, "de": 0.6, "es": 0.65, "am": 0.9, "yo": 0.8, "so": 0.75}
    results, per_query = _synthetic({"en": {128: 100, 256: 100, 512: 60}, "de": {128: 100, 256: 70, 512: 40},
                                     "es": {128: 100, 256: 100, 512: 100}, "am": {128: 60, 256: 10, 512: 0},
                                     "yo": {128: 100, 256: 50, 512: 0}, "so": {128: 40, 256: 10, 512: 0}}, words)
    section = passkey_section(results, per_query, REGISTRY)
    (setting,) = section["settings"]
    curves = {c.language: c for c in setting.curves}
    assert curves["en"].effective() == (256, pytest.approx(0.7 * 256), False)
    assert curves["de"].effective() == (128, pytest.approx(0.6 * 128), False)
    assert curves["es"].effective() == (512, pytest.approx(0.65 * 512), True)
    assert curves["am"].effective() == (0, 0.0, False) and curves["am"].first_fail == 0
    (low,) = [c for c in setting.contrasts if c["tier"] == "low"]
    assert low["tokens"]["delta"] == pytest.approx(128 / 3 - (256 + 128 + 512) / 3)
    assert low["tokens"]["ci_low"] <= low["tokens"]["delta"] <= low["tokens"]["ci_high"] <= 0
    assert low["tokens"]["answer"] is None and low["tokens"]["why"] is None
    assert low["words"]["delta"] == pytest.approx(0.8 * 128 / 3 - (0.7 * 256 + 0.6 * 128 + 0.65 * 512) / 3)
    # reproducible: the same inputs give the same interval
    assert tier_contrasts(setting.curves, seed=5) == tier_contrasts(setting.curves, seed=5)
    # two high-tier languages and one low-tier one: the report's rule, "cannot say" with the counts, no difference
    results, per_query = _synthetic({"en": {128: 100, 256: 100, 512: 60}, "de": {128: 100, 256: 70, 512: 40},
                                     "am": {128: 60, 256: 10, 512: 0}}, words)
    (setting,) = passkey_section(results, per_query, REGISTRY)["settings"]
    (low,) = setting.contrasts
    for unit, what in (("tokens", "measured"), ("words", "with word counts")):
        got = low[unit]
        assert got["answer"] == CANNOT_SAY and got["delta"] is None and got["ci_low"] is None
        assert got["why"] == too_few_languages({"high": ["de", "en"], "low": ["am"]}, what=what)
        assert got["why"].startswith("the high tier holds 2 language(s) " + what + " (de, en) and the low tier holds "
                                     "1 language(s) " + what + " (am); the two-level bootstrap needs at least 3")
    # none failing: the longest length is a lower bound
    results, per_query = _synthetic({"en": {128: 100, 256: 95}}, {"en": 0.7})
    (curve,) = passkey_section(results, per_query, REGISTRY)["settings"][0].curves
    assert curve.effective() == (256, pytest.approx(0.7 * 256), True) and curve.first_fail is None
    assert passkey_cells(results.head(0), per_query.head(0), REGISTRY).height == 0
    # a script written without spaces has no word counts: its effective length has no words, and the
    # contrast in words leaves it out
    results, per_query = _synthetic({"en": {128: 100, 256: 95}, "ja": {128: 50, 256: 10}}, {"en": 0.7, "ja": 0.0})
    results = results.with_columns(pl.when(pl.col("language") == "ja").then(None)
                                   .otherwise(pl.col("context_words_median")).alias("context_words_median"))
    (setting,) = passkey_section(results, per_query, REGISTRY)["settings"]
    ja = next(c for c in setting.curves if c.language == "ja")
    assert ja.effective() == (0, None, False)
    (mid,) = setting.contrasts
    assert mid["tokens"]["languages"] == ["ja"] and mid["words"]["languages"] == [] and mid["words"]["delta"] is None
    assert mid["tokens"]["answer"] == mid["words"]["answer"] == CANNOT_SAY


# --- RoPE base and sliding window ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory) -> Path:
    from workbench.testing.tiny import build_tiny_mistral

    texts = (TATOEBA / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()[:400]
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny") / "mistral", texts)


def test_rope_base_and_window_overrides_change_a_rope_decoder_and_are_recorded(tiny_mistral: Path, tmp_path: Path):
    from workbench.eval.encoders import WorkbenchEncoder

    long_text = " ".join((TATOEBA / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()[:30])
    short_text = "Tom is here."

    def vectors(**overrides):
        encoder = WorkbenchEncoder(tiny_mistral, show_progress=False, **overrides)
        return encoder, encoder.encode_texts([long_text, short_text], as_query=False)

    plain_encoder, plain = vectors()
    rope_encoder, rope = vectors(rope_theta=1_000_000.0)
    window_encoder, window = vectors(sliding_window=8)
    assert rope_encoder.backend.model.config.rope_parameters["rope_theta"] == 1_000_000.0
    assert window_encoder.backend.model.config.sliding_window == 8
    assert not np.allclose(plain[0], rope[0], atol=1e-5)
    assert not np.allclose(plain[0], window[0], atol=1e-5)  # a long text sees less of itself
    assert np.allclose(plain[1], window[1], atol=1e-5)  # 4 tokens (+BOS, EOS) fit in the window
    assert len({plain_encoder.fingerprint, rope_encoder.fingerprint, window_encoder.fingerprint}) == 3

    run = Run.create(tmp_path / "run")
    config = RunConfig.model_validate({"run": {"name": "t"}, "eval": {
        "task": "passkey", "model": str(tiny_mistral), "data_dir": str(TATOEBA), "languages": ["sw"],
        "passkey": {"lengths": [60], "depths": [50], "queries": 3, "candidates": 5, "rope_theta": 500000.0,
                    "sliding_window": 16, "max_length": 64}}})
    run_eval(run, config, REGISTRY)
    results = run.read_table("eval", "results", EVAL_RESULTS)
    assert results["rope_theta"].to_list() == [500000.0] and results["sliding_window"].to_list() == [16]


def test_rope_overrides_on_an_encoder_without_rope_are_one_error(tmp_path: Path):
    run = Run.create(tmp_path / "run")
    with pytest.raises(WorkbenchError) as err:
        run_eval(run, _config(rope_theta=1e6), REGISTRY)
    assert "rotary" in str(err.value) or "RoPE" in str(err.value)


def test_the_default_filler_is_the_runs_accepted_examples(tmp_path: Path):
    from workbench.tables import ACCEPTED

    run = Run.create(tmp_path / "run")
    rows = [{"slot_id": f"sw-{i}", "language": "sw", "family": "short_long", "user_query": f"Swali {i}?",
             "positive_document": f"Hati ya {i} inaeleza jambo.", "status": "ok", "reasons": [], "lid_votes": []}
            for i in range(3)]
    run.write_table("accepted", "sw", pl.DataFrame(rows, schema=ACCEPTED), ACCEPTED)
    config = RunConfig.model_validate({"run": {"name": "t"}, "eval": {"task": "passkey", "languages": ["sw"]}})
    probe = passkey.PasskeyProbe(config.eval, REGISTRY)
    fillers = probe._fillers(run)
    assert list(fillers) == ["sw"] and fillers["sw"].origin == "run"
    assert set(fillers["sw"].units) == {f"Swali {i}?" for i in range(3)} | {f"Hati ya {i} inaeleza jambo." for i in range(3)}
    assert probe.dataset("sw") == "passkey-sw-accepted"
    missing = RunConfig.model_validate({"run": {"name": "t"}, "eval": {"task": "passkey", "languages": ["am"]}})
    with pytest.raises(WorkbenchError) as err:
        passkey.PasskeyProbe(missing.eval, REGISTRY)._fillers(run)
    assert "'am'" in str(err.value) and "--data-dir" in str(err.value)


def test_results_written_before_the_cell_columns_still_read(tmp_path: Path):
    from workbench.run import read_parquet
    from workbench.tables import ADDED_LATER

    path = tmp_path / "results.parquet"
    old = {k: v for k, v in EVAL_RESULTS.items() if k not in ADDED_LATER}
    pl.DataFrame([{"system": "bm25", "task": "XQuADRetrieval", "dataset": "xquad-en", "language": "en", "split": "test",
                   "metric": "ndcg_at_10", "value": 50.0}], schema=old).write_parquet(path)
    table = read_parquet(path, EVAL_RESULTS)
    assert table.columns == list(EVAL_RESULTS) and table["context_tokens"].null_count() == 1


def test_an_eval_also_target_can_name_a_subset_of_the_systems(tmp_path: Path):
    import tomllib

    from workbench.config import parse_config
    from workbench.eval.stage import PIPELINE_SYSTEMS, eval_sections

    path = REPO / "examples" / "quickstart.toml"
    config = parse_config(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
    sections = eval_sections(Run.create(tmp_path / "run"), config.eval, config.pipeline, config.train, PIPELINE_SYSTEMS)
    by_task = {}
    for section in sections:
        by_task.setdefault(section.task, []).append(section.system)
    assert by_task["passkey"] == ["minilm"]
    # every other system of eval_systems: the base as it ships, under the trained contract, and one per training seed
    assert by_task["tatoeba"] == ["minilm", "minilm@ft-contract", "minilm-ft", "minilm-ft-seed14"]
    assert "bm25" in by_task["xquad"] and not hasattr(sections[-1], "systems")
