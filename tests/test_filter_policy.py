"""The language policy: strict by default, accept_also, every field checked, no tie accepted.

Real Tatoeba sentences (../shared/data/tatoeba) and the real LID models; the wrong-language
answers a weak generator gives (the dominant neighbour, English) come from the OpenAI test double.
"""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from workbench.audit import run_audit
from workbench.config import FilterSection, RunConfig, parse_config
from workbench.errors import ConfigError
from workbench.filter.lid import Ensemble, Vote
from workbench.filter.rules import check_row
from workbench.filter.script import words
from workbench.filter.stage import run_filter
from workbench.languages import load_registry
from workbench.pipeline import run_pipeline
from workbench.run import Run
from workbench.tables import FILTERED, GENERATED
from workbench.testing.openai_double import Faults, OpenAIDouble
from workbench.testing.samples import generated_table, synthetic_rows, tatoeba_sentences

from filter_fixtures import make_row

# UDHR article 1 in Amharic, written as formal Amharic writes it: words separated by the Ethiopic
# wordspace ፡ (U+1361), no spaces; sentences end with ። (U+1362).
UDHR_1_AMHARIC = ("የሰው፡ልጅ፡ሁሉ፡ሲወለድ፡ነጻና፡በክብርና፡በመብትም፡እኩልነት፡ያለው፡ነው።"
                  "የተፈጥሮ፡ማስተዋልና፡ሕሊና፡ስላለው፡አንዱ፡ሌላውን፡በወንድማማችነት፡መንፈስ፡መመልከት፡ይገባዋል።")


@pytest.fixture(scope="module")
def text(shared_data, registry):
    codes = ("sw", "en", "be", "ru", "uk", "gl", "es", "bs", "hr", "am", "mk", "bg")
    return {code: tatoeba_sentences(shared_data, registry.get(code)) for code in codes}


def _confident(ensemble, sentences: list[str], code: str, k: int) -> list[str]:
    """Sentences every member calls ``code``: the text is unambiguously in that language."""
    chosen = [s for s in sentences if len(s) > 30 and all(v.label == code for v in ensemble.votes(s))]
    assert len(chosen) >= k, f"fewer than {k} unambiguous {code} sentences"
    return chosen[:k]


def test_strict_by_default(section):
    assert section.allow_confusable is False
    assert RunConfig().filter.allow_confusable is False


@pytest.mark.parametrize("asked, written", [("be", "ru"), ("uk", "ru"), ("gl", "es"), ("mk", "bg")])
def test_neighbour_language_is_rejected_by_default_and_accepted_only_when_lenient(asked, written, text, registry,
                                                                                  ensemble, section):
    s1, s2, s3 = _confident(ensemble, text[written], written, 3)
    row = make_row(asked, "sts", S1=s1, S2=s2, S3=s3)
    verdict = check_row(row, registry, ensemble, section)
    assert {"wrong_language:S1", "wrong_language:S2", "wrong_language:S3"} <= set(verdict.reasons)
    assert verdict.lid_language == written
    lenient = section.model_copy(update={"allow_confusable": True})
    assert check_row(row, registry, Ensemble.load(registry, lenient), lenient).reasons == ()


def test_accept_also_languages_are_accepted_and_say_what_they_were_accepted_as(text, registry, ensemble, section):
    assert registry.get("bs").accept_also == ("hr", "sr") and registry.get("bs").accept_also_reason
    assert registry.get("ms").accept_also == ("id",)  # measured: strict ms recall 61% (benchmarks/lid_accuracy.py)
    assert registry.get("uk").accept_also == () and registry.get("gl").accept_also == ()
    s1, s2, s3 = _confident(ensemble, text["hr"], "hr", 3)
    verdict = check_row(make_row("bs", "sts", S1=s1, S2=s2, S3=s3), registry, ensemble, section)
    assert verdict.reasons == () and verdict.lid_accepted_as == "hr"
    # Croatian in a Slovene slot: not on sl's accept_also list, so rejected
    assert "wrong_language:S1" in check_row(make_row("sl", "sts", S1=s1, S2=s2, S3=s3), registry, ensemble, section).reasons


def test_accept_also_needs_a_reason_and_known_codes(languages_copy):
    path = languages_copy / "mk.toml"
    original = path.read_text()
    path.write_text(original.replace('quota = 1000', 'accept_also = ["bg"]\nquota = 1000'))
    with pytest.raises(ConfigError, match="mk.toml: field 'accept_also_reason': required"):
        load_registry(languages_copy)
    path.write_text(original.replace('quota = 1000', 'accept_also = ["xx"]\naccept_also_reason = "test"\nquota = 1000'))
    with pytest.raises(ConfigError, match="mk.toml: field 'accept_also': unknown language code"):
        load_registry(languages_copy)


def test_a_tie_is_never_an_acceptance(ensemble):
    text = "Habari ya asubuhi"
    tie = ensemble.decide(text, "sw", (Vote("cld2", "sw", 0.9), Vote("fasttext_lid176", "en", 0.9)))
    assert tie.accepted is False and tie.uncertain and tie.support == 0.5
    split = ensemble.decide(text, "sw", (Vote("cld2", "sw", 0.9), Vote("fasttext_lid176", "en", 0.9),
                                         Vote("langid", "de", 0.9)))
    assert split.accepted is False and split.uncertain
    english = ensemble.decide(text, "sw", (Vote("cld2", "sw", 0.9), Vote("fasttext_lid176", "en", 0.9),
                                           Vote("langid", "en", 0.9)))
    assert english.accepted is False and not english.uncertain  # a majority for English: wrong_language
    two_of_three = ensemble.decide(text, "sw", (Vote("cld2", "sw", 0.9), Vote("fasttext_lid176", "sw", 0.9),
                                                Vote("langid", "en", 0.9)))
    assert two_of_three.accepted is True


def test_tie_becomes_lid_uncertain_with_votes_kept(registry, section, monkeypatch):
    # no cache: the patched votes change between checks of the same text, which a member's never do
    ensemble = Ensemble.load(registry, section.model_copy(update={"lid_cache_size": 0}))
    votes = (Vote("cld2", "sw", 0.9), Vote("fasttext_lid176", "en", 0.9))
    monkeypatch.setattr(ensemble, "_lazy_votes", lambda *args: votes)
    sentence = "Habari ya asubuhi rafiki yangu, ninapenda kusoma vitabu vingi."  # long enough for its own vote
    row = make_row("sw", "short_short", input=sentence, positive_document=sentence.upper())
    verdict = check_row(row, registry, ensemble, section)
    assert {"lid_uncertain:input", "lid_uncertain:positive_document"} <= set(verdict.reasons)
    assert ("input", "fasttext_lid176", "en", 0.9) in verdict.votes
    # short fields: a split vote is no evidence: the script check decides them ...
    short = make_row("sw", "short_short", input="Habari yako", positive_document="Asante sana")
    verdict = check_row(short, registry, ensemble, section)
    assert not any(r.startswith(("lid_uncertain", "wrong_language")) for r in verdict.reasons)
    assert ("input+positive_document", "cld2", "sw", 0.9) in verdict.votes
    # ... unless English out-votes the language (here: the Swahili vote is below member_min_prob)
    unsure = (Vote("cld2", "sw", 0.1), Vote("fasttext_lid176", "en", 0.9), Vote("langid", "de", 0.9))
    monkeypatch.setattr(ensemble, "_lazy_votes", lambda *args: unsure)
    verdict = check_row(short, registry, ensemble, section)
    assert {"wrong_language:input", "wrong_language:positive_document"} <= set(verdict.reasons)
    # ... or a neighbour ties it: Russian against Belarusian
    belarusian = make_row("be", "short_short", input="Добры дзень", positive_document="Дзякуй вам")
    tie = (Vote("cld2", "be", 0.9), Vote("fasttext_lid176", "ru", 0.9))
    monkeypatch.setattr(ensemble, "_lazy_votes", lambda *args: tie)
    assert "wrong_language:input" in check_row(belarusian, registry, ensemble, section).reasons


def test_per_language_threshold_from_the_language_file(languages_copy, text):
    path = languages_copy / "sw.toml"
    path.write_text(path.read_text().replace("quota = 1000", "lid_threshold = 0.9\nquota = 1000"))
    strict_sw = load_registry(languages_copy)
    ensemble = Ensemble.load(strict_sw, FilterSection())
    votes = (Vote("cld2", "sw", 0.9), Vote("fasttext_lid176", "sw", 0.9), Vote("langid", "en", 0.9))
    assert ensemble.threshold_for("sw") == 0.9 and ensemble.threshold_for("en") == 0.5
    assert ensemble.decide("x", "sw", votes).accepted is False  # 2 of 3 is not 0.9


def test_short_english_query_and_labels_in_a_swahili_slot_are_rejected(text, registry, ensemble, section):
    sw = text["sw"]
    documents = dict(positive_document=" ".join(sw[100:112]), hard_negative_document=" ".join(sw[200:212]))
    english = make_row("sw", "short_long", user_query="Where is the station?", **documents)
    assert "wrong_language:user_query" in check_row(english, registry, ensemble, section).reasons
    labels = make_row("sw", "long_short", input_text=" ".join(sw[300:310]), label="Sports news", misleading_label="Politics")
    reasons = check_row(labels, registry, ensemble, section).reasons
    assert {"wrong_language:label", "wrong_language:misleading_label"} <= set(reasons), reasons


def test_short_right_language_fields_mostly_pass(text, registry, ensemble, section):
    sw = text["sw"]
    short = [s for s in sw if 8 <= sum(ch.isalpha() for ch in s) < 20][:40]
    assert len(short) >= 20
    document = " ".join(sw[100:112])
    kept = sum(not check_row(make_row("sw", "short_long", user_query=q, positive_document=document,
                                      hard_negative_document=" ".join(sw[200:212])), registry, ensemble, section).reasons
               for q in short)
    assert kept >= 0.8 * len(short), f"{kept} of {len(short)} short Swahili queries kept"


def test_ethiopic_wordspace_counts_as_a_space(text, registry, ensemble, section):
    assert len(words(UDHR_1_AMHARIC)) == 20
    assert len(UDHR_1_AMHARIC.split()) == 1  # what a white-space counter sees
    am = text["am"]
    row = make_row("am", "short_long", user_query=am[5], positive_document=UDHR_1_AMHARIC,
                   hard_negative_document=" ".join(am[20:30]))
    verdict = check_row(row, registry, ensemble, section)
    assert not any(r.startswith("too_short") for r in verdict.reasons), verdict.reasons
    assert verdict.reasons == ()


def _double_config(base_url: str, languages: list[str]):
    return parse_config({
        "run": {"name": "neighbours", "languages": languages, "quota": 6, "seed": 5},
        "generate": {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, "model": "double",
                     "base_url": base_url},
        "filter": {"near_dedup": False},
        "pipeline": {"stages": ["plan", "generate", "filter", "audit"]},
    }, where="test")


def test_generator_sliding_into_the_neighbour_is_rejected_and_audited(shared_data, tmp_path):
    """The reported failure: every answer in the dominant neighbour (be -> ru, gl -> es), from the double."""
    registry = load_registry()
    faults = Faults(rate_wrong_language=1.0, wrong_language_as="neighbour")
    with OpenAIDouble(shared_data, faults) as double:
        run = Run.create(tmp_path / "run")
        run_pipeline(run, _double_config(double.base_url, ["be", "gl"]), registry)
    for code, neighbour in (("be", "ru"), ("gl", "es")):
        accepted = run.read_table("accepted", code, FILTERED)
        rejected = run.read_table("rejected", code, FILTERED)
        assert accepted.height == 0, accepted.select("lid_language", "reasons").to_dicts()
        assert rejected.height > 0
        assert any(r.startswith("wrong_language") for rs in rejected["reasons"] for r in rs)
    report = json.loads((run.stage_dir("audit") / "audit.json").read_text())
    be = next(lang for lang in report["languages"] if lang["language"] == "be")
    assert be["accepted"] == 0 and "wrong_language" in be["rejects_by_reason"]
    assert any(d["detected"] == "ru" and d["accepted"] == 0 for d in be["detected"])
    html = (run.stage_dir("audit") / "index.html").read_text()
    assert 'data-language="be" data-detected="ru"' in html
    review = [json.loads(line) for line in (run.stage_dir("audit") / "rejects_for_review.jsonl").read_text().splitlines()]
    assert len(review) == sum(run.read_table("rejected", c, FILTERED).height for c in ("be", "gl"))
    assert all(r["human_verdict"] is None and r["reasons"] and r["lid_votes"] for r in review)


def test_generator_answering_in_english_is_rejected(shared_data, tmp_path):
    registry = load_registry()
    with OpenAIDouble(shared_data, Faults(rate_wrong_language=1.0, wrong_language_as="english")) as double:
        run = Run.create(tmp_path / "run")
        run_pipeline(run, _double_config(double.base_url, ["sw"]), registry)
    assert run.read_table("accepted", "sw", FILTERED).height == 0
    rejected = run.read_table("rejected", "sw", FILTERED)
    assert set(rejected["lid_language"]) == {"en"}


def test_audit_counts_accept_also_rows_and_shows_escaped_examples(shared_data, tmp_path, registry):
    hr = tatoeba_sentences(shared_data, registry.get("hr"))
    en = tatoeba_sentences(shared_data, registry.get("en"))
    rows = synthetic_rows("bs", hr, en, 12, random.Random(1), families=("sts",))
    rows[0]["S1"] = "<script>alert(1)</script> " + rows[0]["S1"]  # must be shown escaped
    run = Run.create(tmp_path / "run")
    run.write_table("generated", "bs", generated_table(rows), GENERATED)
    config = RunConfig.model_validate({"filter": {"near_dedup": False}})
    run_filter(run, config, registry)
    accepted = run.read_table("accepted", "bs", FILTERED)
    as_hr = accepted.filter(pl.col("lid_accepted_as") == "hr").height
    assert as_hr > 0
    run_audit(run, config, registry)
    report = json.loads((run.stage_dir("audit") / "audit.json").read_text())
    bs = report["languages"][0]
    assert bs["accepted_as_neighbour"] == accepted.filter(pl.col("lid_accepted_as").is_not_null()).height
    assert bs["accepted_plain"] + bs["accepted_as_neighbour"] == bs["accepted"]
    html = (run.stage_dir("audit") / "index.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    assert html.count('class="example-row"') <= 6 and 'data-verdict="accepted"' in html


def test_letterless_rows_are_rejected_and_counted_by_the_audit(shared_data, tmp_path, registry):
    sw = tatoeba_sentences(shared_data, registry.get("sw"))
    en = tatoeba_sentences(shared_data, registry.get("en"))
    rows = synthetic_rows("sw", sw, en, 12, random.Random(2), families=("sts",))
    broken = {0: dict(S1="{", S2="{", S3="{'Worst'}"), 1: dict(S1="N/A"), 2: dict(S2="3559"), 3: dict(S3="4678,2042")}
    for index, fields in broken.items():
        rows[index].update(fields)
    run = Run.create(tmp_path / "run")
    run.write_table("generated", "sw", generated_table(rows), GENERATED)
    config = RunConfig.model_validate({"filter": {"near_dedup": False}})
    run_filter(run, config, registry)
    rejected = run.read_table("rejected", "sw", FILTERED)
    no_text = {row["slot_id"] for row in rejected.to_dicts() if any(r.startswith("no_text:") for r in row["reasons"])}
    assert no_text == {rows[i]["slot_id"] for i in broken}
    accepted = run.read_table("accepted", "sw", FILTERED)
    assert all(any(ch.isalpha() for ch in row[f]) for row in accepted.to_dicts() for f in ("S1", "S2", "S3"))
    run_audit(run, config, registry)
    report = json.loads((run.stage_dir("audit") / "audit.json").read_text())
    assert report["languages"][0]["rejects_by_reason"]["no_text"] == len(broken)
