from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from workbench.errors import ConfigError, UnknownLanguageError
from workbench.filter.members import LABEL_FIELDS, MEMBERS
from workbench.languages import LID_MODELS, UNSUPPORTED, load_registry, tier_for_tokens

GENERATION_CODES = set(
    "af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he hi "
    "hr hu hy id is it ja jv ka kk km kn ko ku ky la lo lt lv mg mk ml mn mr ms my ne nl no om or pa "
    "pl ps pt ro ru sa sd si sk sl so sq sr su sv sw ta te th tl tr ug uk ur uz vi xh yi zh".split()
)
MIRACL = set("ar bn de en es fa fi fr hi id ja ko ru sw te th yo zh".split())


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_exactly_93_generation_languages_plus_eval_only_yoruba(registry):
    assert {lang.code for lang in registry.generation} == GENERATION_CODES
    assert len(registry.generation) == 93
    eval_only = [lang for lang in registry if not lang.generates]
    assert [lang.code for lang in eval_only] == ["yo"]
    assert eval_only[0].quota == 0 and eval_only[0].miracl and eval_only[0].miracl_low_resource


def test_codes_unique_and_match_file_names(registry):
    files = sorted(p.stem for p in registry.directory.glob("*.toml"))
    assert files == sorted(registry.by_code)
    iso3 = [lang.iso639_3 for lang in registry]
    assert len(iso3) == len(set(iso3))


def test_miracl_set_is_exactly_the_18(registry):
    assert {lang.code for lang in registry.miracl} == MIRACL


def test_every_language_is_covered_by_a_lid_model_or_says_why(registry):
    for lang in registry:
        assert lang.lid.covered_by() or lang.lid_note, lang.code
    # lid.176 famously lacks these three (fastText's published label list).
    lacking = {lang.code for lang in registry if lang.lid.fasttext_lid176 == UNSUPPORTED}
    assert lacking == {"ha", "om", "xh"}


def test_tiers_follow_cc100_token_counts(registry):
    for lang in registry.generation:
        assert lang.tier == tier_for_tokens(lang.cc100_tokens_m)
    tiers = {t: {lang.code for lang in registry.generation if lang.tier == t} for t in ("high", "mid", "low")}
    assert {"en", "ru", "de"} <= tiers["high"] and {"sw", "bn", "te"} <= tiers["mid"]
    assert {"am", "om", "xh", "my"} <= tiers["low"]


def test_scripts_and_confusable_groups(registry):
    assert registry.get("sr").scripts == ("Cyrl", "Latn")
    assert registry.get("uz").scripts == ("Latn",)
    assert registry.get("pa").scripts == ("Guru",)
    assert registry.confusables("bs") == {"hr", "sr"}
    assert registry.confusables("ms") == {"id"}
    assert registry.confusables("no") == {"da"}
    assert registry.confusables("fi") == set()


def test_tatoeba_codes_point_at_real_files(registry, shared_data):
    tatoeba = shared_data / "tatoeba"
    for lang in registry:
        if lang.tatoeba and lang.code != "en":
            assert (tatoeba / f"tatoeba.{lang.tatoeba}-eng.{lang.tatoeba}").is_file(), lang.code


def test_every_fact_has_a_source(registry):
    for lang in registry.generation:
        assert {"cc100", "scripts", "lid"} <= set(lang.sources), lang.code


def test_select_by_code_tier_and_all(registry):
    assert [lang.code for lang in registry.select(["sw,ja"])] == ["sw", "ja"]
    low = registry.select(["low"])
    assert low and all(lang.tier == "low" and lang.generates for lang in low)
    assert len(registry.select(["all"])) == 93
    assert "yo" in {lang.code for lang in registry.select(["miracl"])}


def test_unknown_code_is_one_clear_error_with_suggestion(registry):
    with pytest.raises(UnknownLanguageError) as info:
        registry.get("swa")
    line = str(info.value)
    assert "unknown language code 'swa'" in line and "sw" in line and "\n" not in line


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda text: text.replace('scripts = ["Latn"]', 'scripts = ["latn"]'), "scripts"),
        (lambda text: re.sub(r"(?m)^tier = .*$", 'tier = "high"', text), "tier"),
        (lambda text: re.sub(r"(?m)^native_name = .*\n", "", text), "native_name"),
        (lambda text: "qouta = 3\n" + text, "qouta"),
        (lambda text: re.sub(r"(?m)^quota = .*$", "quota = -5", text), "quota"),
    ],
)
def test_malformed_language_file_names_file_and_field(languages_copy: Path, edit, field):
    path = languages_copy / "sw.toml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_registry(languages_copy)
    line = str(info.value)
    assert str(path) in line and f"'{field}" in line and "\n" not in line


def test_broken_toml_syntax_names_the_file(languages_copy: Path):
    path = languages_copy / "de.toml"
    path.write_text("code = 'de\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": not valid TOML"):
        load_registry(languages_copy)


def test_lid_label_columns_are_the_labelled_members_of_the_member_registry(registry):
    """The member registry owns the [lid] columns: each member's label_field is a column of every
    language file, and no file has a column that no member reads."""
    label_fields = [member.label_field for member in MEMBERS.values() if member.label_field]
    assert LID_MODELS == tuple(label_fields) == tuple(LABEL_FIELDS)
    assert all(MEMBERS[LABEL_FIELDS[field]].label_field == field for field in LID_MODELS)
    for path in sorted(registry.directory.glob("*.toml")):
        columns = tomllib.loads(path.read_text(encoding="utf-8"))["lid"]
        assert list(columns) == label_fields, path.name  # same fields, in the registry's order


def test_lid_labels_exist_in_the_real_models(registry):
    """Every label the registry names is one the installed model can actually emit."""
    known = {field: MEMBERS[LABEL_FIELDS[field]].known_labels() for field in LID_MODELS}
    assert len(known["fasttext_lid176"]) == 176
    for lang in registry:
        for model_name, label in lang.lid.model_dump().items():
            if label != UNSUPPORTED:
                assert label in known[model_name], (lang.code, model_name, label)
