"""What the run itself measured: per task, dataset and language, every measured system with its 95%
interval; the differences that isolate one cause (what the training data did: trained minus the
base under the trained contract; what the input format did: the base under that contract minus the
base as it is; and each system against the focus system where only the system differs), each with
its paired test (Holm-corrected across languages) and, when it is not significant, the smallest
difference it could have detected; the spread across training seeds; plus the training card of each
fine-tuned system and the Tatoeba leakage guard.

Inputs:
- EVAL_RESULTS rows (``source == "measured"``) from the given results tables, with their condition
  columns (:mod:`workbench.conditions`);
- EVAL_PER_QUERY rows from ``per_query.parquet`` next to each results table (written by the eval
  stage); a number without per-query scores is shown without an interval, and says so;
- for a system whose model folder carries ``workbench_encoder.json`` (``trained_on``: the run that
  trained it) or whose results table sits in a run with a complete train stage: that run's
  ``manifest.json``, ``run.toml``, ``generated/*.parquet`` and ``train/records.parquet``.

Outputs (frames, written by the report): REPORT_MEASURED (one row per task, dataset, language,
metric, system) and REPORT_COMPARISONS (one row per pair of systems on one of those; every pair,
with the cause that separates them).
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

from workbench import conditions, stats
from workbench.encoder import CONTRACT_FILE
from workbench.errors import TableError
from workbench.languages import Registry
from workbench.metrics import F1, PRECISION, RECALL
from workbench.report.inputs import SystemFacts, system_facts
from workbench.resources import INSTALLED_ROOT, REPO_ROOT
from workbench.run import CONFIG, MANIFEST, Folder, read_parquet, read_parquet_unchecked
from workbench.tables import EVAL_CELL_KEY, EVAL_PER_QUERY, REPORT_COMPARISONS, REPORT_MEASURED, conform

log = logging.getLogger(__name__)

PER_QUERY_FILE = "per_query.parquet"
# Below this many training records a fine-tune shows what this data did to the model, not what the
# recipe does at scale (the paper trains on ~500k examples); the report says so in a warning.
TINY_TRAINING_SET = 1_000
# mean of per-query scores vs the aggregate in results.parquet: equal up to the eval stage's rounding
MEAN_TOLERANCE = 0.05
KEY = ["task", "dataset", "language", "split", "metric"]
# bitext-mining metrics with no per-pair score (EVAL_PER_QUERY holds accuracy per pair)
_NOT_PER_PAIR = (F1, PRECISION, RECALL)
# The causes a paired difference can isolate (REPORT_COMPARISONS.cause); "several" is never shown as one.
TRAINING_DATA = "training data"
INPUT_FORMAT = "input format"
SYSTEM = "system"
SEVERAL = "several"


def cannot_discriminate(metric: str, values: Sequence[float | None], n_docs: int | None) -> str | None:
    """Why ``metric`` cannot tell the systems apart on one dataset, in words, or None: Recall@k on a corpus
    of at most k passages (every passage a system ranks is in its top k, so it measures only whether the
    system ranked them all), or every system at the ceiling (100)."""
    from workbench.metrics import metric_label

    name, _, k = metric.rpartition("_at_")
    if name == "recall" and k.isdigit() and n_docs is not None and n_docs <= int(k):
        return (f"the corpus has {n_docs:,} passages, no more than {k}: {metric_label(metric)} counts every passage "
                "a system ranks, so it is 100 for any system that ranks them all")
    present = [v for v in values if v is not None]
    if present and all(v >= 100 - 1e-9 for v in present):
        return f"every system scores 100.0 ({metric_label(metric)} at its ceiling)"
    return None


def load_per_query(results_paths: Sequence[Path | str]) -> pl.DataFrame:
    """EVAL_PER_QUERY rows from ``per_query.parquet`` beside each results table (absent: none)."""
    frames = []
    for raw in results_paths:
        path = Path(raw).parent / PER_QUERY_FILE
        if path.is_file():
            if "cluster" not in read_parquet_unchecked(path).columns:
                raise TableError("per-query table without the 'cluster' column: written by an older eval", where=str(path),
                                 fix="re-run eval on its run (workbench eval RUN ..., or workbench run CONFIG)")
            frames.append(read_parquet(path, EVAL_PER_QUERY))
    if not frames:
        return pl.DataFrame(schema=EVAL_PER_QUERY)
    return pl.concat(frames).unique([*stats.GROUP_KEY, *EVAL_CELL_KEY, "query_id"], keep="first", maintain_order=True)


def system_order(facts: dict[str, SystemFacts], focus: str) -> list[str]:
    """Lexical systems first, then the others in input order, the focus system last (a difference reads
    later minus earlier); further training seeds are left out (they feed their system's seed spread)."""
    systems = [s for s, f in facts.items() if not f.replica]
    lexical = [s for s in systems if facts[s].lexical and s != focus]
    rest = [s for s in systems if s not in lexical and s != focus]
    return lexical + rest + ([focus] if focus in systems else [])


def cause_of(a: SystemFacts, b: SystemFacts, row_a: dict, row_b: dict) -> tuple[str, list[str]]:
    """What separates B from A on one dataset: (cause, the conditions that differ besides the weights).

    ``training data``: A is B's base model run under B's contract (only the training changed the
    weights); ``input format``: the same weights, one under another model's contract; ``system``:
    different models under the same conditions (a lexical system has no instruction or max_length);
    ``several``: more than one of these at once.
    """
    differ = conditions.differences(row_a, row_b, conditions.SYSTEM_CONDITIONS)
    if a.contract_from and Path(a.contract_from).resolve() == Path(b.model).resolve() and not differ:
        return TRAINING_DATA, differ
    if b.contract_from and Path(b.contract_from).resolve() == Path(a.model).resolve() and not differ:
        return TRAINING_DATA, differ
    if a.model == b.model and not a.lexical:
        return (INPUT_FORMAT, differ) if differ else (SYSTEM, differ)
    if not differ:
        return SYSTEM, differ
    return SEVERAL, differ


@dataclass
class Measured:
    table: pl.DataFrame  # REPORT_MEASURED
    comparisons: pl.DataFrame  # REPORT_COMPARISONS
    systems: list[str]
    facts: dict[str, SystemFacts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def shown_pairs(self, focus: str) -> list[tuple[str, str]]:
        """The pairs the tables show as differences: one cause each (training data, input format), and
        every other system against the focus system where only the system differs."""
        shown = []
        causes = self.comparisons.unique(["system_a", "system_b"], keep="first", maintain_order=True)
        for rec in causes.iter_rows(named=True):
            if rec["cause"] in (TRAINING_DATA, INPUT_FORMAT) or (rec["cause"] == SYSTEM and focus in
                                                                 (rec["system_a"], rec["system_b"])):
                shown.append((rec["system_a"], rec["system_b"]))
        order = {TRAINING_DATA: 0, INPUT_FORMAT: 1, SYSTEM: 2}
        kinds = {(r["system_a"], r["system_b"]): r["cause"] for r in causes.iter_rows(named=True)}
        return sorted(shown, key=lambda p: order.get(kinds[p], 3))


def measure(results: pl.DataFrame, per_query: pl.DataFrame, registry: Registry, focus: str) -> Measured:
    measured = results.filter(pl.col("source") == "measured")
    facts = system_facts(measured)
    notes: list[str] = []
    order = system_order(facts, focus)
    intervals = stats.intervals_table(per_query) if per_query.height else None
    seed_rows = _seed_values(measured, facts)
    rows = []
    without = 0
    for rec in measured.filter(pl.col("system").is_in(order)).iter_rows(named=True):
        got = None
        if intervals is not None:
            match = intervals.filter(*[pl.col(k) == rec[k] for k in stats.GROUP_KEY])
            if match.height:
                got = match.row(0, named=True)
                if abs(got["mean"] - rec["value"]) > MEAN_TOLERANCE:
                    notes.append(f"per-query scores of {rec['system']} on {rec['dataset']} {rec['metric']} average "
                                 f"{got['mean']:.2f}, not the reported {rec['value']:.2f}: no interval shown for it.")
                    got = None
        if got is None and not (rec["task_kind"] == conditions.BITEXT and rec["metric"] in _NOT_PER_PAIR):
            without += 1
        seeds = seed_rows.get((rec["system"], *(rec[k] for k in KEY)), [])
        rows.append({
            **{k: rec[k] for k in ("task", "dataset", "language", "split", "metric", "system", "model", "value",
                                   "n_queries", "n_docs", "contract_from", *conditions.CONDITIONS)},
            "tier": registry.get(rec["language"]).tier,
            "ci_low": got["ci_low"] if got else None, "ci_high": got["ci_high"] if got else None,
            "method": got["method"] if got else None, "n_scored": got["n"] if got else None,
            "n_clusters": got["n_clusters"] if got else None, "n_seeds": max(1, len(seeds)),
            "seed_values": "; ".join(f"{seed}: {value:.1f}" for seed, value in seeds) if len(seeds) > 1 else None,
            "seed_spread": (max(v for _, v in seeds) - min(v for _, v in seeds)) if len(seeds) > 1 else None,
        })
    if measured.filter((pl.col("task_kind") == conditions.BITEXT) & pl.col("metric").is_in(list(_NOT_PER_PAIR))).height:
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
    comparisons = _with_causes(comparisons, measured, facts, seed_rows, registry)
    return Measured(table=table, comparisons=comparisons, systems=order, facts=facts, notes=notes)


def _seed_values(measured: pl.DataFrame, facts: dict[str, SystemFacts]) -> dict[tuple, list[tuple[int, float]]]:
    """(seed group's system, task, dataset, language, split, metric) -> [(seed, value)] over its training seeds."""
    out: dict[tuple, list[tuple[int, float]]] = {}
    for rec in measured.filter(pl.col("training_seed").is_not_null()).sort("training_seed").iter_rows(named=True):
        group = facts[rec["system"]].seed_group
        out.setdefault((group, *(rec[k] for k in KEY)), []).append((rec["training_seed"], rec["value"]))
    return out


def _with_causes(comparisons: pl.DataFrame, measured: pl.DataFrame, facts: dict[str, SystemFacts],
                 seed_rows: dict, registry: Registry) -> pl.DataFrame:
    by_key = {(r["system"], *(r[k] for k in KEY)): r for r in measured.iter_rows(named=True)}
    extra = []
    for rec in comparisons.iter_rows(named=True):
        key = tuple(rec[k] for k in KEY)
        row_a, row_b = by_key.get((rec["system_a"], *key), {}), by_key.get((rec["system_b"], *key), {})
        cause, differ = cause_of(facts[rec["system_a"]], facts[rec["system_b"]], row_a, row_b)
        words = "; ".join(conditions.difference_words(c, row_a, row_b) for c in differ)
        seed_deltas = None
        if cause == TRAINING_DATA and rec["value_a"] is not None:
            trained, base = (rec["system_b"], rec["value_a"]) if not facts[rec["system_b"]].contract_from \
                else (rec["system_a"], rec["value_b"])
            seeds = seed_rows.get((trained, *key), [])
            if len(seeds) > 1:
                seed_deltas = "; ".join(f"{seed}: {value - base:+.1f}" for seed, value in seeds)
        extra.append({"cause": cause, "differs": words or None, "seed_deltas": seed_deltas})
    schema = {"cause": pl.Utf8, "differs": pl.Utf8, "seed_deltas": pl.Utf8}
    comparisons = pl.concat([comparisons, pl.DataFrame(extra, schema=schema)], how="horizontal")
    comparisons = comparisons.with_columns(
        pl.col("language").replace_strict({l.code: l.tier for l in registry}, default=None).alias("tier"))
    return conform(comparisons, REPORT_COMPARISONS, where="report comparisons")


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
    seeds: list[int] = field(default_factory=list)  # training seeds measured here (this system's seed group)


def display_path(path: str | None) -> str | None:
    """Paths as a reader can place them: relative to the working folder, or inside an installed package."""
    if not path:
        return path
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1] + " (installed package)"
    for root, suffix in ((REPO_ROOT, " (shipped with the workbench)"), (INSTALLED_ROOT, " (installed with the workbench)")):
        if Path(path).resolve().is_relative_to(root.resolve()) and not Path.cwd().resolve().is_relative_to(root.resolve()):
            return Path(path).resolve().relative_to(root.resolve()).as_posix() + suffix
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
        if contract.get("trained_on") and (trained_on / MANIFEST).is_file():
            return trained_on.resolve(), contract
    run = Path(results_file).resolve().parent.parent
    manifest = _manifest(run)
    train = manifest.get("stages", {}).get("train", {})
    if train.get("status") == "complete" and str(train.get("stats", {}).get("export") or "") and \
            Path(str(train["stats"]["export"])).resolve() == Path(model).resolve():
        return run, {}
    return None, {}


def _manifest(run: Path) -> dict:
    path = run / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _run_toml(run: Path) -> dict:
    path = run / CONFIG
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _generators(run: Path) -> list[str]:
    names: set[str] = set()
    for path in sorted((run / Folder.GENERATED).glob("*.parquet")):
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
    text = (run / CONFIG).read_text(encoding="utf-8", errors="replace") if (run / CONFIG).is_file() else ""
    return "openai_double" in text or "test double" in text.lower()


def training_cards(results: pl.DataFrame) -> list[TrainingCard]:
    cards = []
    measured = results.filter(pl.col("source") == "measured")
    facts = system_facts(measured)
    for rec in measured.unique("system", keep="first", maintain_order=True).iter_rows(named=True):
        if facts[rec["system"]].lexical or facts[rec["system"]].replica or facts[rec["system"]].contract_from:
            continue
        run, contract = _training_run(str(rec["model"]), rec["input_file"])
        if run is None:
            continue
        manifest = _manifest(run)
        train_stats = manifest.get("stages", {}).get("train", {}).get("stats", {})
        config = _run_toml(run).get("train", {})
        per_language: dict[str, int] = {}
        records_path = run / Folder.TRAIN / "records.parquet"
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
        card = TrainingCard(system=rec["system"], model=display_path(str(rec["model"])), run_dir=display_path(str(run)),
                            base_model=display_path(contract.get("base_model") or config.get("model")),
                            generators=generators,
                            records=records, per_language=per_language, steps=steps, batch_size=batch, epochs=epochs,
                            from_test_double=uses_test_double(run, generators))
        group = facts[rec["system"]].seed_group
        card.seeds = sorted({int(v) for v in measured.filter(pl.col("seed_group") == group)["training_seed"].drop_nulls()})
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
    bitext = results.filter(pl.col("task_kind") == conditions.BITEXT)
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
    for path in sorted((run / Folder.ACCEPTED).glob("*.parquet")):
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
    bitext_systems = set(results.filter(pl.col("task_kind") == conditions.BITEXT)["system"])
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
