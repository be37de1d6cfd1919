"""Report stage: one HTML page per model answering "where is it behind, is it the low-resource
languages, and is the data to blame?".

Inputs (all Parquet with declared schemas):
- one or more ``eval/results.parquet`` tables (EVAL_RESULTS: system, model, task, dataset,
  language, split, metric, value in percent, n_queries, n_docs, source, created_at);
- optionally ``audit/summary.parquet`` (AUDIT_SUMMARY: language, generated, accepted,
  acceptance_rate, top_reject_reasons, top_lid_confusions, cost_usd, ...);
- the language registry (tiers, ``miracl_low_resource``) and the published reference points
  (:mod:`workbench.report.references`).

Outputs in ``out_dir``: ``index.html`` (self-contained: CSS inline, plots as base64 PNG),
``summary.md``, ``report.json`` (inputs with sha256, focus system, reference), and the tidy tables
``scores``, ``gaps``, ``groups``, ``data`` as both ``.parquet`` and ``.csv``
(schemas REPORT_SCORES, REPORT_GAPS, REPORT_GROUPS, REPORT_DATA in :mod:`workbench.tables`).

Gaps are ``reference - model`` in points of the metric: a positive gap means the model is behind.

Example::

    workbench report runs/demo                      # the run's eval/ and audit/ -> runs/demo/report/
    workbench report --results runs/bm25/eval/results.parquet --results runs/ft/eval/results.parquet \
        --audit runs/ft/audit/summary.parquet --out reports/example
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from workbench import checks
from workbench.config import ReportSection, RunConfig
from workbench.languages import Registry, load_registry
from workbench.report import STAGE
from workbench.report import measured as measured_mod
from workbench.report.analysis import Analysis, analyse, pick_focus
from workbench.report.compare import compare, compare_view, run_compare
from workbench.report.inputs import load_audit, load_results
from workbench.report.passkey import passkey_section, without_passkey
from workbench.report.plots import measured_plots, miracl_chart_values, miracl_plots
from workbench.report.references import load_references, reference_dir
from workbench.report.render import (
    main_result,
    measured_lede,
    measured_sections,
    render,
    significance_lines,
    tatoeba_rows,
    templates_dir,
    write_table,
)
from workbench.report.tiers import tier_question
from workbench.run import Folder, Run, StageResult, atomic_write_bytes, file_sha256
from workbench.runner import Stage, StageInput, run_stage
from workbench.tables import (
    REPORT_COMPARISONS,
    REPORT_DATA,
    REPORT_GAPS,
    REPORT_GROUPS,
    REPORT_MEASURED,
    REPORT_PASSKEY,
    REPORT_SCORES,
    REPORT_TIERS,
)

# Imported by name elsewhere (cli, stages, tests): keep them reachable from here.
__all__ = ["REPORT", "STAGE", "Analysis", "analyse", "build_report", "compare", "load_audit", "load_results",
           "miracl_chart_values", "render", "run_compare", "run_report", "templates_dir", "write_report"]

log = logging.getLogger(__name__)


def run_report(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """The report stage over a run, through the runner (skipped when current): the run's
    ``eval/results.parquet`` (plus ``[report] results``) and its audit -> ``report/``."""
    return run_stage(run, REPORT, config, registry)


def outside_inputs(section: ReportSection) -> list[str]:
    """Tables from outside the run the report reads (they join its digest, by content)."""
    return [*section.results, *([section.audit] if section.audit else [])]


def write_report(inputs: StageInput, section: ReportSection) -> StageResult:
    """The report stage's body."""
    run = inputs.run
    audit = Path(section.audit) if section.audit else run.stage_dir(Folder.AUDIT) / "summary.parquet"
    own = run.stage_dir(Folder.EVAL) / "results.parquet"
    result = build_report(run.stage_dir(Folder.REPORT), [*([own] if own.is_file() else []), *section.results],
                          audit=audit if section.audit or audit.is_file() else None, config=section,
                          registry=inputs.registry)
    result.outputs = {f"{Folder.REPORT}/{name}": rows for name, rows in result.outputs.items()}
    result.stats.pop("headline", None)  # in report.json; the manifest keeps the focus and the inputs
    return result


def build_report(
    out_dir: Path | str,
    results: Sequence[Path | str],
    *,
    audit: Path | str | None = None,
    config: ReportSection | None = None,
    registry: Registry | None = None,
) -> StageResult:
    """Build the gap report in ``out_dir`` from results tables, an optional audit and the references
    (``workbench report --results ... --out ...``; the stage calls it for a run).

    Writes index.html, summary.md, report.json and scores/gaps/groups/data as .parquet + .csv.
    Nothing is written unless every input reads cleanly.
    """
    config = config or ReportSection()
    registry = registry or load_registry()
    frame = load_results(results, registry)
    audit_df = load_audit(audit, registry)
    refs = load_references(reference_dir(config.reference_dir))
    per_query = measured_mod.load_per_query(results)
    # the passkey probe has its own section (many cells per dataset); the other sections never see its rows
    passkey = passkey_section(frame, per_query, registry)
    everything = frame
    frame, per_query = without_passkey(frame, per_query)
    # a run with passkey results only: the systems (focus, training card) still come from its rows
    analysed = frame if frame.height else everything
    focus = pick_focus(analysed, config.focus)
    tiers = tier_question(frame, per_query, registry, focus)
    analysis = analyse(analysed, audit_df, refs, registry, config, tiers)
    measured = measured_mod.measure(frame, per_query, registry, analysis.focus)
    cards = measured_mod.training_cards(everything)
    inputs = [{"role": "results", "path": str(p), "sha256": file_sha256(Path(p))} for p in results]
    for p in results:
        if (Path(p).parent / measured_mod.PER_QUERY_FILE).is_file():
            pq = Path(p).parent / measured_mod.PER_QUERY_FILE
            inputs.append({"role": "per-query scores", "path": str(pq), "sha256": file_sha256(pq)})
    if audit is not None:
        inputs.append({"role": "audit", "path": str(audit), "sha256": file_sha256(Path(audit))})
    sections = measured_sections(measured, registry, analysis.focus)
    plots = miracl_plots(analysis) | measured_plots(sections)
    alerts = measured_mod.leakage_warnings(cards, frame)
    warnings = alerts + [f"{c.system}: {w}" for c in cards for w in c.warnings]
    out = Path(out_dir)
    compare_link = compare_view(frame, measured, analysis.focus, out, registry)
    first = {
        "sections": sections, "significance": significance_lines(measured, analysis.focus), "cards": cards,
        "warnings": warnings, "alerts": alerts, "main": main_result(sections, measured, analysis.focus),
        "lede": measured_lede(measured, cards, analysis.focus),
        "compare_link": compare_link, "measured_notes": measured.notes, "comparisons": measured.comparisons,
        "passkey": passkey,
        "tatoeba_builder": lambda ids: tatoeba_rows(measured, audit_df, cards, refs, analysis.focus, registry, ids),
    }
    html, markdown = render(analysis, config, inputs, plots, first)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, int] = {}
    outputs |= write_table(out, "measured", measured.table, REPORT_MEASURED)
    outputs |= write_table(out, "comparisons", measured.comparisons, REPORT_COMPARISONS)
    outputs |= write_table(out, "scores", analysis.scores, REPORT_SCORES)
    outputs |= write_table(out, "gaps", analysis.gaps, REPORT_GAPS)
    outputs |= write_table(out, "groups", analysis.groups, REPORT_GROUPS)
    outputs |= write_table(out, "tiers", analysis.tiers, REPORT_TIERS)
    outputs |= write_table(out, "data", analysis.data, REPORT_DATA)
    if passkey is not None:
        outputs |= write_table(out, "passkey", passkey["table"], REPORT_PASSKEY)
    meta = {"focus": analysis.focus, "primary_reference": analysis.primary, "inputs": inputs,
            "reference_dir": measured_mod.display_path(str(refs.directory)), "headline": analysis.headline,
            "notes": analysis.notes,
            "measured_significance": first["significance"], "warnings": warnings,
            "compare_view": compare_link}
    atomic_write_bytes(out / "report.json", json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(out / "summary.md", markdown.encode("utf-8"))
    atomic_write_bytes(out / "index.html", html.encode("utf-8"))  # last: the page exists only when complete
    outputs |= {"report.json": 1, "summary.md": 1, "index.html": 1}
    log.info("report written to %s (focus %s)", out, analysis.focus)
    return StageResult(STAGE, outputs=outputs, stats={"focus": analysis.focus, "headline": analysis.headline,
                                                      "out_dir": str(out), "inputs": inputs})


REPORT = Stage(STAGE, reads=("train", "eval", "audit"), sections=(ReportSection,), body=write_report,
               writes=(Folder.REPORT,), languages=True, outside=outside_inputs,
               check=checks.report)


def report_from_options(run_dir: Path | None, config_file: Path | None, updates: dict[str, str], *,
                        results: Sequence[Path] = (), audit: Path | None = None, out: Path | None = None,
                        compare: tuple[str, str] | None = None) -> tuple[Path, StageResult]:
    """``workbench report``: (the folder written, what was written).

    A report of a run into ``RUN/report`` is the report stage (through the runner), with ``--results``
    and ``--audit`` joining its ``[report]`` section after the tables it already names. Anything else
    (``--out`` elsewhere, no run, ``--compare A B``) is built from the named tables into ``out``; with
    a run, its ``[report]`` settings (and the options) are saved to ``run.toml`` first."""
    from workbench.config import RunConfig, load_config, parse_config
    from workbench.errors import WorkbenchError
    from workbench.run import Folder
    from workbench.runconfig import open_run, resolve_run_config

    own_results = run_dir / Folder.EVAL / "results.parquet" if run_dir is not None else None
    if run_dir is not None and not compare and (out is None or out == run_dir / Folder.REPORT):
        run = open_run(run_dir, create=False)  # once: for the tables run.toml names and for the report
        _, named = resolve_run_config(run, config_file, create=False, write=False)
        joined = list(dict.fromkeys([*named.report.results, *(str(p) for p in results)]))
        extra = {"results": joined if results else None, "audit": str(audit) if audit else None}
        run, config = resolve_run_config(run, config_file, {"report": {**updates, **{
            k: v for k, v in extra.items() if v}}}, create=False, stages=("report",))
        if not (run_dir / Folder.EVAL / "results.parquet").is_file() and not config.report.results:
            raise WorkbenchError("no eval/results.parquet in this run and no --results given", where=str(run_dir),
                                 fix="run 'workbench eval' first or pass --results PATH")
        return run.stage_dir(Folder.REPORT), run_report(run, config, load_registry())
    if run_dir is not None:
        _, config = resolve_run_config(run_dir, config_file, {"report": updates}, create=False, stages=("report",))
        section = config.report
    else:
        base = load_config(config_file) if config_file else RunConfig()
        section = parse_config({**base.model_dump(mode="json"), "report": {**base.report.model_dump(mode="json"), **updates}},
                               where="command line").report
    if out is None:
        if run_dir is None:
            raise WorkbenchError("no output folder", where="--out", fix="give --out DIR or a run directory")
        out = run_dir / Folder.REPORT
    registry = load_registry()
    if compare and all(compare):
        return out, run_compare(compare[0], compare[1], out, registry=registry)
    tables: list[Path] = []
    if own_results is not None and own_results.is_file():
        tables.append(own_results)
    tables += [Path(p) for p in section.results] + list(results)
    audit_path = audit or (Path(section.audit) if section.audit else None)
    own_audit = run_dir / Folder.AUDIT / "summary.parquet" if run_dir is not None else None
    if audit_path is None and own_audit is not None and own_audit.is_file():
        audit_path = own_audit
    return out, build_report(out, tables, audit=audit_path, config=section, registry=registry)
