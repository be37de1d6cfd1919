"""Filter rules, script check and LID ensemble on real text: one real example per reject reason."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.config import FilterSection, RunConfig, parse_config
from workbench.errors import ConfigError
from workbench.families import FAMILIES
from workbench.filter.dedup import find_duplicates
from workbench.filter.lid import Ensemble, lid176_path
from workbench.filter.members import MEMBERS, UNSUPPORTED, LidMember
from workbench.filter.rules import REASONS, check_row
from workbench.filter.script import script_share
from workbench.languages import load_registry
from workbench.testing.samples import tatoeba_sentences, xquad_paragraphs

from filter_fixtures import make_row

# Real Tatoeba sentences (amh-eng pair 2 and 3, romanised by hand): Amharic in the Latin script.
LATIN_AMHARIC = "Tom bizu gize ke wishaw gar yinageral. Temari aydelehum. Bewnet yasferal, ene alawkim."


@pytest.fixture(scope="module")
def text(shared_data, registry):
    """Real sentences and paragraphs by language: text['sw'] (Tatoeba), text['de_paragraphs'] (XQuAD)."""
    out = {code: tatoeba_sentences(shared_data, registry.get(code)) for code in ("sw", "am", "en", "id", "ms", "de")}
    out["de_paragraphs"] = xquad_paragraphs(shared_data, "de")
    return out


def _swahili_short_long(text) -> dict:
    sw = text["sw"]
    return make_row("sw", "short_long", user_query=sw[40],
                    positive_document=" ".join(sw[100:112]), hard_negative_document=" ".join(sw[200:212]))


def _reasons(row, registry, ensemble, section) -> list[str]:
    return list(check_row(row, registry, ensemble, section).reasons)


def test_clean_real_examples_are_kept(text, registry, ensemble, section):
    assert _reasons(_swahili_short_long(text), registry, ensemble, section) == []
    paragraphs = text["de_paragraphs"]
    row = make_row("de", "short_long", user_query="Wer gewann den Super Bowl 50?",
                   positive_document=paragraphs[0], hard_negative_document=paragraphs[5])
    assert _reasons(row, registry, ensemble, section) == []
    bitext = make_row("sw", "bitext", S1=text["sw"][100], S2=text["en"][7], S3=text["en"][300])
    assert _reasons(bitext, registry, ensemble, section) == []


@pytest.mark.parametrize(
    "reason, change",
    [
        ("missing_field:hard_negative_document", lambda r, t: r.update(hard_negative_document="  ")),
        ("too_short:positive_document", lambda r, t: r.update(positive_document=t["sw"][0])),
        ("too_long:user_query", lambda r, t: r.update(user_query=" ".join(t["sw"][300:340]))),
        ("positive_equals_negative", lambda r, t: r.update(hard_negative_document=r["positive_document"].upper())),
        ("query_copied", lambda r, t: r.update(user_query=t["sw"][105])),
        ("placeholder:positive_document", lambda r, t: r.update(positive_document=r["positive_document"] + " {query}")),
        ("placeholder:hard_negative_document", lambda r, t: r.update(hard_negative_document="[Insert document here] " + r["hard_negative_document"])),
        ("refusal:positive_document", lambda r, t: r.update(positive_document="I'm sorry, but I cannot help with that request. " + r["positive_document"])),
        ("wrong_language:positive_document", lambda r, t: r.update(positive_document=" ".join(t["en"][100:112]))),
    ],
)
def test_each_reason_is_triggered_by_a_real_example(reason, change, text, registry, ensemble, section):
    row = _swahili_short_long(text)
    change(row, text)
    reasons = _reasons(row, registry, ensemble, section)
    assert reason in reasons, reasons


def test_long_long_too_short(text, registry, ensemble, section):
    sw = text["sw"]
    row = make_row("sw", "long_long", input=" ".join(sw[10:30]), positive_document=" ".join(sw[30:33]))
    assert _reasons(row, registry, ensemble, section) == ["long_long_too_short:positive_document"]


def test_every_reason_code_is_declared(text, registry, ensemble, section):
    sw = text["sw"]
    faulty = []
    for change in (dict(positive_document=LATIN_AMHARIC), dict(hard_negative_document="  "),
                   dict(user_query=" ".join(sw[300:340])), dict(user_query=sw[105]),
                   dict(positive_document=" ".join(sw[100:112]) + " {query}"),
                   dict(positive_document="I'm sorry, but I cannot help with that request. " + " ".join(sw[100:112])),
                   dict(positive_document=" ".join(text["en"][100:112]))):
        row = _swahili_short_long(text)
        row.update(change)
        faulty.append(row)
    faulty.append(make_row("am", "sts", S1=text["am"][1], S2=text["am"][2], S3=LATIN_AMHARIC))
    faulty.append(make_row("sw", "long_long", input=" ".join(sw[10:30]), positive_document=" ".join(sw[30:33])))
    seen: set[str] = set()
    for row in faulty:
        reasons = _reasons(row, registry, ensemble, section)
        assert reasons, row  # every faulty row is rejected, so the loop below is never empty
        for reason in reasons:
            code, _, field = reason.partition(":")
            assert code in REASONS, reason
            assert not field or set(field.split("+")) <= set(FAMILIES[row["family"]].fields), reason
            seen.add(code)
    assert len(seen) >= 8, seen


def test_latin_script_amharic_is_rejected(text, registry, ensemble, section):
    am = text["am"]
    row = make_row("am", "sts", S1=am[1], S2=am[2], S3=LATIN_AMHARIC)
    reasons = _reasons(row, registry, ensemble, section)
    assert "wrong_script:S3" in reasons
    assert not any(r.endswith(":S1") or r.endswith(":S2") for r in reasons), reasons
    assert script_share(LATIN_AMHARIC, ("Ethi",)) == 0.0
    assert script_share(am[1], ("Ethi",)) == 1.0


def test_english_answer_in_a_swahili_slot_is_rejected(text, registry, ensemble, section):
    en = text["en"]
    row = make_row("sw", "sts", S1=en[500], S2=en[501] + " " + en[502], S3=en[900] + " " + en[901])
    verdict = check_row(row, registry, ensemble, section)
    assert any(r.startswith("wrong_language") for r in verdict.reasons), verdict.reasons
    assert any(label == "en" for _, _, label, _ in verdict.votes)
    # the same sentences in an English slot pass
    row["language"] = "en"
    assert not any(r.startswith("wrong_language") for r in _reasons(row, registry, ensemble, section))


def test_bitext_sides_must_each_be_in_their_own_language(text, registry, ensemble, section):
    sw, en = text["sw"], text["en"]
    swapped = make_row("sw", "bitext", S1=sw[100], S2=sw[101] + " " + sw[102], S3=en[300])
    assert "wrong_language:S2" in _reasons(swapped, registry, ensemble, section)


def test_short_fields_are_voted_on_together_and_numbers_are_not_text(registry, ensemble, section, monkeypatch):
    row = make_row("am", "long_short", input_text="ቶም ብዙ ጊዜ ከውሻው ጋር ይናገራል። ተማሪ አይደለሁም።", label="ስፖርት", misleading_label="ዜና")
    verdict = check_row(row, registry, ensemble, section)
    assert verdict.reasons == ()
    assert {field for field, *_ in verdict.votes} == {"input_text", "label+misleading_label"}
    row.update(label="2023", misleading_label="2024")  # no letters: no text, no LID vote
    verdict = check_row(row, registry, ensemble, section)
    assert verdict.reasons == ("no_text:label", "no_text:misleading_label")
    assert {field for field, *_ in verdict.votes} == {"input_text"}
    # a family that declares numeric labels (year classes) keeps them, unchecked
    numeric = dataclasses.replace(FAMILIES["long_short"], numeric_fields=("label", "misleading_label"))
    monkeypatch.setitem(FAMILIES, "long_short", numeric)
    assert check_row(row, registry, ensemble, section).reasons == ()
    row["label"] = "sport"
    assert "wrong_script:label" in _reasons(row, registry, ensemble, section)


# What the quickstart accepted as Swahili (issue 23), and what a generator leaks instead of text.
LETTERLESS_ROWS = [
    dict(S1="{", S2="{", S3="{'Worst'}"),
    dict(S1="N/A", S2="3559", S3="4678,2042"),
]
NOT_TEXT = ["{", "}", "[]", "{}", "3559", "4678,2042", "{'Worst'}", '{"label": "Michezo"}', '["a", "b"]', "N/A",
            "n/a", "NULL", "None", "1.", "2)", "—", "...", "?!", "12:45", "$100", "50%", "#1", "***", "```",
            '"', "''", "1, 2, 3", "(1)", "2024-01-01", "+1 555 0100", "{'S1': '", "१२३", "٣٥٥٩", "١٢:٤٥", "1a",
            "x", "4678,2042 km"]


def test_letterless_fields_are_rejected_as_no_text(text, registry, ensemble, section):
    for fields in LETTERLESS_ROWS:
        reasons = _reasons(make_row("sw", "sts", **fields), registry, ensemble, section)
        assert {"no_text:S1", "no_text:S2", "no_text:S3"} <= set(reasons), (fields, reasons)
    sw = text["sw"]
    for junk in NOT_TEXT:
        for family, name, base in (("sts", "S2", dict(S1=sw[100], S2=sw[101], S3=sw[102])),
                                   ("long_short", "label", dict(input_text=" ".join(sw[300:310]), label="Michezo",
                                                                misleading_label="Siasa"))):
            row = make_row("sw", family, **{**base, name: junk})
            assert f"no_text:{name}" in _reasons(row, registry, ensemble, section), (junk, family)


def test_real_human_text_always_carries_text(shared_data, registry, section):
    """No real sentence, query or paragraph (every Tatoeba language, MIRACL queries, XQuAD) is no_text."""
    from workbench.filter.rules import is_text

    texts = [s for lang in registry.generation for s in tatoeba_sentences(shared_data, lang)]
    for path in sorted((shared_data / "miracl").glob("topics.*.tsv")):
        texts += [line.split("\t", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]
    for code in ("ar", "de", "hi", "th", "zh"):
        texts += xquad_paragraphs(shared_data, code)
    assert len(texts) > 75_000
    failing = [t for t in texts if not is_text(t, section)]
    assert len(failing) <= 1, failing[:5]  # the one: a one-character Chinese sentence ("行。")


def _confident_indonesian(text, registry) -> list[str]:
    ensemble = Ensemble.load(registry, FilterSection())
    chosen = [s for s in text["id"] if len(s) > 30 and all(v.label == "id" for v in ensemble.votes(s))]
    if len(chosen) < 3:
        raise AssertionError("no confidently Indonesian Tatoeba sentences found")
    return chosen[:3]


def test_malay_slot_with_indonesian_text_follows_the_accept_also_list(text, registry, languages_copy):
    sentences = _confident_indonesian(text, registry)
    row = make_row("ms", "sts", S1=sentences[0], S2=sentences[1], S3=sentences[2])
    section = FilterSection()
    verdict = check_row(row, registry, Ensemble.load(registry, section), section)
    assert verdict.reasons == () and verdict.lid_accepted_as == "id"  # ms.toml: accept_also = ["id"]
    path = languages_copy / "ms.toml"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("accept_also")))
    without = load_registry(languages_copy)
    reasons = _reasons(row, without, Ensemble.load(without, section), section)
    assert {"wrong_language:S1", "wrong_language:S2", "wrong_language:S3"} <= set(reasons)


def test_near_duplicates_are_caught_and_distinct_texts_survive(text):
    paragraphs = text["de_paragraphs"]
    original = paragraphs[3]
    words = original.split()
    edited = " ".join(words[:-1] + ["heute."])  # one word changed at the end
    texts = [original, paragraphs[10], edited, original.upper(), paragraphs[20], paragraphs[21]]
    kinds = find_duplicates(texts, threshold=0.8)
    assert kinds == [None, None, "near", "exact", None, None]
    assert find_duplicates(texts, near=False) == [None, None, None, "exact", None, None]
    assert find_duplicates(texts, threshold=0.8, sample=4) == [None, None, "near", "exact", None, None]


def test_extra_fasttext_member_is_pluggable_with_a_label_map(text, registry):
    section = FilterSection(members=["cld2", "extra"], extra_fasttext_path=str(lid176_path()),
                            extra_labels={"de": "de", "en": "en"})
    ensemble = Ensemble.load(registry, section)
    decision = ensemble.decide(text["de_paragraphs"][0], "de")
    assert decision.accepted and decision.support == 1.0
    assert {(v.member, v.label) for v in decision.votes} == {("cld2", "de"), ("extra", "de")}
    assert ensemble.covers("sw") == ["cld2"]  # no label mapped: the extra member abstains
    english = ensemble.decide(" ".join(text["en"][100:110]), "de")
    assert english.accepted is False and english.seen_as == "en"


def test_bad_filter_config_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="filter.weights.*'fasttext' is not an LID member"):
        parse_config({"filter": {"weights": {"fasttext": 1.0}}}, where="run.toml")
    with pytest.raises(ConfigError, match="filter.min_words.*'user_qeury'"):
        parse_config({"filter": {"min_words": {"user_qeury": 2}}}, where="run.toml")
    section = RunConfig().filter.model_copy(update={"members": ["extra"], "extra_fasttext_path": str(tmp_path / "glotlid.bin")})
    with pytest.raises(ConfigError, match="glotlid.bin: fastText LID model file not found"):
        Ensemble.load(load_registry(), section)


def test_lazy_voting_gives_the_same_verdict_as_asking_every_member(text, registry, section):
    ensemble = Ensemble.load(registry, section.model_copy(update={"allow_confusable": False}))
    cases = [(s, code) for code in ("sw", "id", "ms", "de") for s in text[code][:60] if len(s) > 25]
    cases += [(s, "sw") for s in text["en"][:40]]  # English in a Swahili slot: wrong_language
    cases += [(s, "ms") for s in text["id"][:40]]  # accepted as id (accept_also)
    cases += [(s, "de") for s in text["sw"][:40]]  # a language de's members name in split ways
    asked = 0
    for sentence, code in cases:
        lazy = ensemble.decide(sentence, code)
        full = ensemble.decide(sentence, code, ensemble.votes(sentence))
        assert (lazy.accepted, lazy.uncertain, lazy.accepted_as) == (full.accepted, full.uncertain, full.accepted_as)
        asked += len(lazy.votes)
    assert asked < 3 * len(cases)  # some members were skipped


def test_member_registry_drives_config_and_labels(registry):
    with pytest.raises(ConfigError, match="filter.members.*'fasttext' is not an LID member"):
        parse_config({"filter": {"members": ["fasttext", "cld2"]}}, where="run.toml")
    section = FilterSection(members=["cld2", "cld3", "lingua"], lingua_low_accuracy=True)
    ensemble = Ensemble.load(registry, section)
    assert [m.name for m in ensemble.members] == ["cld2", "cld3", "lingua"]  # cheapest first, by MEMBERS' cost
    assert "lingua" not in ensemble.covers("gl") and "lingua" in ensemble.covers("sw")  # lingua has no Galician


def test_config_accepts_exactly_the_registered_members():
    for name in MEMBERS:  # every registered member is a valid filter.members / filter.weights name
        config = parse_config({"filter": {"members": [name], "weights": {name: 2.0}}}, where="run.toml")
        assert config.filter.members == [name]
    assert set(RunConfig().filter.weights) == set(MEMBERS)
    assert RunConfig().filter.members == [name for name, member in MEMBERS.items() if member.on_by_default]
    with pytest.raises(ConfigError, match="filter.weights.*'cld4' is not an LID member"):
        parse_config({"filter": {"weights": {"cld4": 1.0}}}, where="run.toml")


class _ScriptGuessMember(LidMember):
    """A new LID model, registered the way a contributor would: one class (labels from the run, like 'extra')."""

    name = "script_guess"
    label_field = None
    cost = 1.0  # cheaper than every real member: asked first

    def predict(self, text: str) -> tuple[str, float]:
        return ("am", 0.9) if any("\u1200" <= ch <= "\u137f" for ch in text) else ("", 0.0)

    @classmethod
    def known_labels(cls) -> set[str]:
        return {"am"}

    @classmethod
    def labels(cls, registry, section) -> dict[str, str]:
        return {code: code if code == "am" else UNSUPPORTED for code in registry.by_code}


def test_adding_a_member_is_one_class_in_the_registry(monkeypatch, registry, text):
    """With the class in MEMBERS (nothing else edited), config validates it, weighs it by its
    default and the ensemble asks it first (cost) and counts its vote."""
    monkeypatch.setitem(MEMBERS, _ScriptGuessMember.name, _ScriptGuessMember)
    config = parse_config({"filter": {"members": ["script_guess", "cld2"]}}, where="run.toml")
    assert config.filter.weights["script_guess"] == 1.0
    ensemble = Ensemble.load(registry, config.filter)
    assert [m.name for m in ensemble.members] == ["script_guess", "cld2"]
    assert "script_guess" in ensemble.covers("am") and "script_guess" not in ensemble.covers("sw")  # its labels
    amharic = next(s for s in text["am"] if len(s) > 25)
    verdict = ensemble.decide(amharic, "am")
    assert verdict.accepted and [vote.member for vote in verdict.votes][0] == "script_guess"


def test_lingua_and_cld3_vote_on_real_text(text, registry):
    ensemble = Ensemble.load(registry, FilterSection(members=["cld3", "lingua"], lingua_low_accuracy=True))
    sentence = " ".join(text["sw"][100:103])
    assert {(v.member, v.label) for v in ensemble.votes(sentence)} == {("cld3", "sw"), ("lingua", "sw")}
    assert ensemble.decide(sentence, "sw").accepted
    english = " ".join(text["en"][100:103])
    assert ensemble.decide(english, "sw").accepted is False


def test_vote_cache_gives_the_same_verdicts_and_votes_a_repeated_text_once(text, registry):
    rows = [make_row("sw", "long_short", input_text=" ".join(text["sw"][i:i + 6]), label="Michezo", misleading_label="Siasa")
            for i in range(0, 120, 6)]
    cached = Ensemble.load(registry, FilterSection())
    uncached = Ensemble.load(registry, FilterSection(lid_cache_size=0))
    section = FilterSection()
    for row in rows:
        assert check_row(row, registry, cached, section) == check_row(row, registry, uncached, section)
    assert cached._hits >= 2 * (len(rows) - 1)  # the joined labels: voted on once, then from the cache
    assert uncached._hits == 0


def test_the_benchmarks_lone_field_verdict_is_the_filters(text, registry, ensemble, section):
    """benchmarks/lid_accuracy.py judges a text with lone_field_reasons: the reasons check_row gives a
    bitext S1, the only field of its example in the row's language (long, short, English, letterless)."""
    from workbench.filter.rules import lone_field_reasons

    en = text["en"]
    candidates = text["sw"][:40] + [" ".join(s.split()[:3]) for s in text["sw"][40:80]] + en[:20]
    candidates += [" ".join(s.split()[:2]) for s in en[20:40]] + ["3559", "N/A", "ሰላም ለሁሉም"]
    for s1 in candidates:
        row = make_row("sw", "bitext", S1=s1, S2=en[100], S3=en[300])
        language_reasons = [r.replace(":S1", ":field") for r in check_row(row, registry, ensemble, section).reasons
                            if r.endswith(":S1") and r.split(":")[0] in ("no_text", "wrong_script", "wrong_language", "lid_uncertain")]
        assert lone_field_reasons(s1, "sw", registry, ensemble, section) == language_reasons, s1
