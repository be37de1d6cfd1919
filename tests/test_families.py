"""Family is the one owner of family roles: the roles are consistent, and filter/train read them."""

from __future__ import annotations

from workbench.config import TrainSection
from workbench.families import EXAMPLE_FIELDS, FAMILIES


def test_every_role_is_one_of_the_family_fields():
    for family in FAMILIES.values():
        assert set(family.fields) <= set(EXAMPLE_FIELDS), family.name
        roles = [family.query, family.positive] + ([family.negative] if family.negative else [])
        assert set(roles) == set(family.fields), family.name  # every field has a role, no role is invented
        assert family.main_field == family.query


def test_roles_are_the_paper_mapping():
    # Wang et al. 2024 §3: query (gets the instruction), positive, hard negative, symmetric
    table = {name: (f.query, f.positive, f.negative, f.symmetric, f.cross_lingual) for name, f in FAMILIES.items()}
    assert table == {
        "short_long": ("user_query", "positive_document", "hard_negative_document", False, False),
        "long_short": ("input_text", "label", "misleading_label", False, False),
        "short_short": ("input", "positive_document", None, False, False),
        "long_long": ("input", "positive_document", None, False, False),
        "sts": ("S1", "S2", "S3", True, False),
        "bitext": ("S1", "S2", "S3", True, True),
    }
    assert {n for n, f in FAMILIES.items() if f.distinct_pair} == {"short_long", "long_short", "sts", "bitext"}
    assert {n: f.query_copy for n, f in FAMILIES.items() if f.query_copy} == {
        "short_long": "contained", "short_short": "equal", "long_long": "equal", "sts": "equal"}


def test_cross_lingual_fields_follow_the_target_language():
    assert FAMILIES["bitext"].field_languages("sw", "en") == {"S1": "sw", "S2": "en", "S3": "en"}
    assert FAMILIES["sts"].field_languages("sw", "en") == {"S1": "sw", "S2": "sw", "S3": "sw"}


def test_default_instruction_comes_from_the_family_and_the_config_overrides_it():
    section = TrainSection(model="/models/any")
    assert section.default_instruction(FAMILIES["sts"]) == FAMILIES["sts"].default_instruction
    assert section.default_instruction(FAMILIES["short_long"]) is None  # a retrieval row needs its task
    changed = TrainSection(model="/models/any", bitext_instruction="Find the translation.")
    assert changed.default_instruction(FAMILIES["bitext"]) == "Find the translation."


def test_every_family_declares_its_answer_size_and_field_shapes():
    assert all(f.answer is not None and len(f.shapes) == len(f.fields) for f in FAMILIES.values())
    short_long = FAMILIES["short_long"].answer
    assert short_long.words({"num_words": "500"}) == 25 + 2 * 500  # a query and two documents
    assert short_long.words({"num_words": "50"}) < short_long.words({"num_words": "300"})
    assert FAMILIES["long_short"].answer.words({"num_words": "at least 200"}) == 200 + 10
    sts = FAMILIES["sts"].answer
    assert sts.words({"unit": "phrase"}) < sts.words({"unit": "sentence"}) < sts.words({"unit": "passage"})
