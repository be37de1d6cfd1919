"""Helpers shared by the filter and audit tests: generated rows, and real-text generated tables in a
run directory (the registry, filter section and LID ensemble fixtures are in conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path

from workbench.config import RunConfig
from workbench.families import EXAMPLE_FIELDS, PLACEHOLDER_COLUMNS
from workbench.languages import Registry
from workbench.run import Run
from workbench.tables import GENERATED
from workbench.testing.samples import (
    generated_table,
    synthetic_rows,
    tatoeba_sentences,
    xquad_paragraphs,
)


def make_row(language: str, family: str, **fields) -> dict:
    """One generated row of ``family`` with the given fields (a bitext row targets English unless told)."""
    row = dict.fromkeys((*PLACEHOLDER_COLUMNS, *EXAMPLE_FIELDS))
    row.update(slot_id=f"{language}-{family}-00000", language=language, family=family, task="t", **fields)
    if family == "bitext" and "target_language" not in fields:
        row["target_language"] = "en"
    return row


def make_run(root: Path, data: Path, registry: Registry, languages: dict[str, int], *,
             failed: int = 2, seed: int = 0) -> Run:
    """A run with ``generated/<lang>.parquet`` of real text: ``languages`` maps code -> ok rows.

    Each table also gets ``failed`` rows with status failed (what the generator writes when the
    model's JSON never validated), which the filter must leave alone and the audit must count.
    """
    run = Run.create(root)
    run.config_path.write_text(RunConfig().to_toml())  # as the CLI would: it reads a run's settings from there
    english = tatoeba_sentences(data, registry.get("en"))
    for code, n in languages.items():
        own = tatoeba_sentences(data, registry.get(code))
        rows = synthetic_rows(code, own, english, n, random.Random(seed), xquad_paragraphs(data, code) or None)
        for index in range(failed):
            bad = dict(rows[index % len(rows)])
            bad.update(slot_id=f"{code}-failed-{index:05d}", status="failed", error="invalid JSON from model",
                       raw_response='{"user_query": "unterminated')
            rows.append(bad)
        run.write_table("generated", code, generated_table(rows), GENERATED)
    return run
