"""What the run itself measured: per task, dataset and language, every measured system with its 95%
bootstrap interval, and every pair of measured systems compared by a paired test (Holm-corrected
across languages); plus the training card of each fine-tuned system and the Tatoeba leakage guard.

Inputs:
- EVAL_RESULTS rows (``source == "measured"``) from the given results tables;
- EVAL_PER_QUERY rows from ``per_query.parquet`` next to each results table (written by the eval
  stage); a number without per-query scores is shown without an interval, and says so;
- for a system whose model folder carries ``workbench_encoder.json`` (``trained_on``: the run that
  trained it) or whose results table sits in a run with a complete train stage: that run's
  ``manifest.json``, ``run.toml``, ``generated/*.parquet`` and ``train/records.parquet``.

Outputs (frames, written by the report): REPORT_MEASURED (one row per task, dataset, language,
metric, system) and REPORT_COMPARISONS (one row per pair of systems on one of those).
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from workbench import stats
from workbench.encoder import CONTRACT_FILE
from workbench.languages import Registry
from workbench.report.references import corpus_variant, is_bitext_task, is_bm25
from workbench.run import read_parquet, read_parquet_unchecked
from workbench.tables import EVAL_CELL_KEY, EVAL_PER_QUERY, REPORT_COMPARISONS, REPORT_MEASURED, conform

log = logging.getLogger(__name__)

PER_QUERY_FILE = "per_query.parquet"
# Below this many training records a fine-tune shows what this data did to the model, not what the
# recipe does at scale (the paper trains on ~500k examples); the report says so in a warning.
TINY_TRAINING_SET = 1_000
# mean of per-query scores vs the aggregate in results.parquet: equal up to the eval stage's rounding
_MEAN_TOLERANCE = 0.05
KEY = ["task", "dataset", "language", "split", "metric"]
# bitext-mining metrics with no per-pair score (EVAL_PER_QUERY holds accuracy per pair)
_NOT_PER_PAIR = ("f1", "precision", "recall")


def load_per_query(results_paths: Sequence[Path | str]) -> pl.DataFrame:
    """EVAL_PER_QUERY rows from ``per_query.parquet`` beside each results table (absent: none)."""
    frames = []
    for raw in results_paths:
        path = Path(raw).parent / PER_QUERY_FILE
        if path.is_file():
            frames.append(read_parquet(path, EVAL_PER_QUERY))
    if not frames:
        return pl.DataFrame(schema=EVAL_PER_QUERY)
    return pl.concat(frames).unique([*stats.GROUP_KEY, *EVAL_CELL_KEY, "query_id"], keep="first", maintain_order=True)


def system_order(measured: pl.DataFrame, focus: str) -> list[str]:
    """BM25 first, then the other systems in input order, the focus system last (deltas read later - earlier)."""
    systems = measured["system"].unique(maintain_order=True).to_list()
    bm25 = [s for s in systems if is_bm25(s) and s != focus]
    rest = [s for s in systems if s not in bm25 and s != focus]
    return bm25 + rest + ([focus] if focus in systems else [])


@dataclass
class Measured:
    table: pl.DataFrame  # REPORT_MEASURED
    comparisons: pl.DataFrame  # REPORT_COMPARISONS
    systems: list[str]
    notes: list[str] = field(default_factory=list)


def measure(results: pl.DataFrame, per_query: pl.DataFrame, registry: Registry, focus: str) -> Measured:
    measured = results.filter(pl.col("source") == "measured")
    notes: list[str] = []
    order = system_order(measured, focus)
    intervals = stats.intervals_table(per_query) if per_query.height else None
    rows = []
    without = 0
    for rec in measured.iter_rows(named=True):
        low = high = None
        n = None
        if intervals is not None:
            match = intervals.filter(*[pl.col(k) == rec[k] for k in stats.GROUP_KEY])
            if match.height:
                got = match.row(0, named=True)
                if abs(got["mean"] - rec["value"]) <= _MEAN_TOLERANCE:
                    low, high, n = got["ci_low"], got["ci_high"], got["n"]
                else:
                    notes.append(f"per-query scores of {rec['system']} on {rec['dataset']} {rec['metric']} average "
                                 f"{got['mean']:.2f}, not the reported {rec['value']:.2f}: no interval shown for it.")
        if low is None and not (is_bitext_task(rec["task"]) and rec["metric"] in _NOT_PER_PAIR):
            without += 1
        fact = registry.get(rec["language"])
        rows.append({
            "task": rec["task"], "dataset": rec["dataset"], "corpus": corpus_variant(rec["task"], rec["dataset"]),
            "language": rec["language"], "tier": fact.tier, "split": rec["split"], "metric": rec["metric"],
            "system": rec["system"], "model": rec["model"], "value": rec["value"], "ci_low": low, "ci_high": high,
            "n_scored": n, "n_queries": rec["n_queries"], "n_docs": rec["n_docs"],
        })
    if measured.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean)
                       & pl.col("metric").is_in(list(_NOT_PER_PAIR))).height:
        notes.append("Bitext mining: mteb's F1 and precision are class-weighted over neighbour labels, not means over "
                     "sentence pairs, so they get no interval (recall equals accuracy); the interval and the paired test "
                     "are on accuracy (right translation retrieved or not, per pair).")
    if without:
        notes.append(f"{without} measured number(s) have no per-query scores (no {PER_QUERY_FILE} beside their results "
                     "table, or an older eval), so they are shown without an interval and without a significance test.")
    table = conform(pl.DataFrame(rows, schema=REPORT_MEASURED), REPORT_MEASURED, where="report measured")
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    comparisons = stats.comparisons_table(per_query.filter(pl.col("system").is_in(order)), pairs) if per_query.height \
        else pl.DataFrame(schema=stats.COMPARISON_SCHEMA)
    comparisons = comparisons.with_columns(
        pl.col("language").replace_strict({l.code: l.tier for l in registry}, default=None).alias("tier"))
    comparisons = conform(comparisons, REPORT_COMPARISONS, where="report comparisons")
    return Measured(table=table, comparisons=comparisons, systems=order, notes=notes)


# ---------------------------------------------------------------------------------------------
# training cards and the Tatoeba leakage guard
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingCard:
    system: str
    model: str
    run_dir: str
    base_model: str | None
    generators: list[str]
    records: int | None
    per_language: dict[str, int]
    steps: int | None
    batch_size: int | None
    epochs: float | None
    from_test_double: bool
    warnings: list[str] = field(default_factory=list)


def _display_path(path: str | None) -> str | None:
    """Paths as a reader can place them: relative to the working folder, or inside an installed package."""
    if not path:
        return path
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1] + " (installed package)"
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else path
    except ValueError:
        return path


def _training_run(model: str, results_file: str) -> tuple[Path | None, dict]:
    """The run that trained ``model``: from the model folder's contract, else the results table's run."""
    contract_path = Path(model) / CONTRACT_FILE
    if contract_path.is_file():
        try:
            contract = json.loads(contract_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            contract = {}
        trained_on = Path(model) / contract.get("trained_on", "")  # relative to the model folder (or absolute)
        if contract.get("trained_on") and (trained_on / "manifest.json").is_file():
            return trained_on.resolve(), contract
    run = Path(results_file).resolve().parent.parent
    manifest = _manifest(run)
    train = manifest.get("stages", {}).get("train", {})
    if train.get("status") == "complete" and str(train.get("stats", {}).get("export") or "") and \
            Path(str(train["stats"]["export"])).resolve() == Path(model).resolve():
        return run, {}
    return None, {}


def _manifest(run: Path) -> dict:
    path = run / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _run_toml(run: Path) -> dict:
    path = run / "run.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _generators(run: Path) -> list[str]:
    names: set[str] = set()
    for path in sorted((run / "generated").glob("*.parquet")):
        frame = read_parquet_unchecked(path)
        if "model" in frame.columns:
            names |= {str(m) for m in frame["model"].drop_nulls().unique().to_list()}
    configured = _run_toml(run).get("generate", {}).get("model")
    if not names and configured:
        names.add(str(configured))
    return sorted(names)


def uses_test_double(run: Path, generators: Sequence[str]) -> bool:
    """True when the run's data came from the OpenAI TEST DOUBLE, whose answers are Tatoeba sentences.

    Signals: a generator model named like the double ("double", its default name), or a run config
    that names the double's module.
    """
    if any("double" in name.lower() for name in generators):
        return True
    text = (run / "run.toml").read_text(encoding="utf-8", errors="replace") if (run / "run.toml").is_file() else ""
    return "openai_double" in text or "test double" in text.lower()


def training_cards(results: pl.DataFrame) -> list[TrainingCard]:
    cards = []
    measured = results.filter(pl.col("source") == "measured")
    for rec in measured.unique("system", keep="first", maintain_order=True).iter_rows(named=True):
        if is_bm25(rec["system"]):
            continue
        run, contract = _training_run(str(rec["model"]), rec["input_file"])
        if run is None:
            continue
        manifest = _manifest(run)
        train_stats = manifest.get("stages", {}).get("train", {}).get("stats", {})
        config = _run_toml(run).get("train", {})
        per_language: dict[str, int] = {}
        records_path = run / "train" / "records.parquet"
        if records_path.is_file():
            frame = read_parquet_unchecked(records_path)
            per_language = {r["language"]: r["len"] for r in frame.group_by("language").len().sort("language").iter_rows(named=True)}
        records = sum(per_language.values()) if per_language else train_stats.get("records")
        steps = train_stats.get("steps", contract.get("steps"))
        batch = train_stats.get("batch_size", config.get("batch_size"))
        epochs = train_stats.get("epochs")
        if epochs is None and steps and batch and records:
            epochs = round(steps * batch / records, 1)
        generators = _generators(run)
        card = TrainingCard(system=rec["system"], model=_display_path(str(rec["model"])), run_dir=_display_path(str(run)),
                            base_model=_display_path(contract.get("base_model") or config.get("model")),
                            generators=generators,
                            records=records, per_language=per_language, steps=steps, batch_size=batch, epochs=epochs,
                            from_test_double=uses_test_double(run, generators))
        if records is not None and records < TINY_TRAINING_SET:
            passes = f", about {epochs:g} passes over it" if epochs else ""
            card.warnings.append(
                f"tiny training set: {records:,} training records{passes} (the E5-mistral recipe: ~500k examples, "
                f"one pass). Differences between {card.system} and its base model show what this data did, "
                "not what the recipe does at scale.")
        cards.append(card)
    return cards


# accepted texts checked per language for verbatim Tatoeba sentences (enough to see a leak, cheap to scan)
_OVERLAP_SAMPLE = 500
_MIN_SENTENCE_CHARS = 15  # shorter lines ("Thank you.") occur in any text by chance


def _tatoeba_folders(results: pl.DataFrame) -> list[Path]:
    """LASER-layout Tatoeba folders the evaluations read: the local ``location`` of bitext datasets in
    ``data_sources.json`` beside each results table (written by eval), else the run's [eval] data_dir."""
    folders: list[Path] = []
    bitext = results.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean))
    for results_file in bitext["input_file"].unique().to_list():
        candidates = []
        sources_path = Path(results_file).parent / "data_sources.json"
        try:
            sources = json.loads(sources_path.read_text(encoding="utf-8")) if sources_path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            sources = {}
        for dataset in bitext.filter(pl.col("input_file") == results_file)["dataset"].unique().to_list():
            entry = sources.get(dataset) if isinstance(sources, dict) else None
            if isinstance(entry, dict) and entry.get("origin") == "local" and entry.get("location"):
                candidates.append(Path(entry["location"]))
        data_dir = _run_toml(Path(results_file).resolve().parent.parent).get("eval", {}).get("data_dir")
        if data_dir:
            candidates += [Path(data_dir), Path(data_dir) / "tatoeba"]
        for candidate in candidates:
            if candidate not in folders and candidate.is_dir() and any(candidate.glob("tatoeba.*-eng.*")):
                folders.append(candidate)
    return folders


def tatoeba_overlap(run: Path, folders: Sequence[Path]) -> int:
    """How many accepted training texts of ``run`` contain a Tatoeba sentence verbatim (sampled per language)."""
    sentences: set[str] = set()
    for folder in folders:
        for path in folder.glob("tatoeba.*-eng.*"):
            sentences |= {line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                          if len(line.strip()) >= _MIN_SENTENCE_CHARS}
    if not sentences:
        return 0
    hits = 0
    for path in sorted((run / "accepted").glob("*.parquet")):
        frame = read_parquet_unchecked(path)
        columns = [c for c in ("user_query", "positive_document", "hard_negative_document", "input_text", "S1", "S2", "S3")
                   if c in frame.columns]
        for row in frame.head(_OVERLAP_SAMPLE).select(columns).iter_rows():
            text = " ".join(v for v in row if v)
            if any(s in text for s in sentences):
                hits += 1
    return hits


def leakage_warnings(cards: Sequence[TrainingCard], results: pl.DataFrame) -> list[str]:
    """One loud line per system scored on Tatoeba whose training data came from the test double (by its
    generator name or run config) or holds verbatim sentences of the Tatoeba files the eval read."""
    lines = []
    bitext_systems = set(results.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean))["system"])
    folders = _tatoeba_folders(results) if bitext_systems else []
    for card in cards:
        if card.system not in bitext_systems:
            continue
        if card.from_test_double:
            lines.append(
                f"LEAKAGE: {card.system} was trained on data generated by the OpenAI TEST DOUBLE "
                f"(generator: {', '.join(card.generators) or 'unknown'}; run {card.run_dir}), which answers with "
                "sentences from the Tatoeba files themselves. Its Tatoeba (bitext mining) scores are measured on "
                "its own training sentences and say nothing about the model: do not use them.")
        elif folders and (overlap := tatoeba_overlap(Path(card.run_dir), folders)):
            lines.append(
                f"LEAKAGE: {overlap} accepted training example(s) of {card.system} (run {card.run_dir}) contain "
                f"sentences of the Tatoeba files its Tatoeba scores were measured on ({', '.join(map(str, folders))}). "
                "Those scores are measured partly on training data: do not use them.")
    return lines
