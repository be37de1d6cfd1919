"""Next generation round from a gap report: per-language quotas within a total budget.

Input: a report folder written by :func:`workbench.report.stage.run_report` (its ``data.parquet``,
REPORT_DATA schema: per language the focus system's nDCG@10 gap to the primary reference, the
audit's acceptance rate and cost per generated example).

Rule (documented in docs/report.md): a language's weight is

    need = max(gap, MIN_GAP)            # points of nDCG@10 behind the primary reference
    weight = need / max(acceptance, MIN_ACCEPTANCE)

so the examples to *generate* grow with the gap and with how many generated examples the filter
throws away (a language that keeps 25% needs four times the raw examples for the same accepted
volume). A language with no measured gap gets the median gap of the measured ones; a language
with no acceptance rate gets the mean rate of the audited ones (both stated in the ``basis``
column). Eval-only languages (yo) cannot be generated and are listed as left out.

The budget is either examples (integer, split by largest remainder) or dollars (``$20`` or
``20usd``: each language's quota is its dollar share divided by its cost per generated example).

Example::

    workbench plan runs/round2 --from-report runs/round1/report --budget 5000
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.run import Folder, read_parquet
from workbench.tables import REPORT_DATA

MIN_GAP = 1.0
MIN_ACCEPTANCE = 0.05


@dataclass(frozen=True)
class Budget:
    amount: float
    unit: str  # "examples" | "usd"


def parse_budget(text: str) -> Budget:
    """``5000`` -> 5000 examples; ``$20``, ``20usd``, ``20 USD`` -> 20 dollars."""
    raw = str(text).strip()
    found = re.fullmatch(r"\$\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:usd|\$)|(\d+)(?:\s*examples?)?", raw, flags=re.I)
    if not found:
        raise WorkbenchError(f"budget '{text}' is not understood", where="--budget",
                             fix="give a number of examples (5000) or dollars ($20 or 20usd)")
    if found.group(3):
        amount = int(found.group(3))
        if amount < 1:
            raise WorkbenchError("a budget of 0 examples plans nothing", where="--budget", fix="give 1 or more")
        return Budget(amount, "examples")
    amount = float(found.group(1) or found.group(2))
    if amount <= 0:
        raise WorkbenchError("a budget of $0 plans nothing", where="--budget", fix="give a positive amount")
    return Budget(amount, "usd")


def _report_data(report: Path) -> pl.DataFrame:
    folder = report if report.is_dir() else report.parent
    for candidate in (folder / "data.parquet", folder / Folder.REPORT / "data.parquet"):
        if candidate.is_file():
            return read_parquet(candidate, REPORT_DATA)
    raise WorkbenchError("no report data.parquet found", where=str(report),
                         fix="give the folder 'workbench report' wrote (with data.parquet), or its run directory")


def propose_quotas(report: Path | str, budget: Budget | str, registry: Registry) -> pl.DataFrame:
    """Per generation language: gap, acceptance, weight, proposed quota and estimated cost.

    Columns: language, tier, gap, acceptance_rate, cost_per_generated_usd, weight, quota,
    est_cost_usd, basis. Languages that cannot be generated come last with quota 0 and the reason.
    """
    if isinstance(budget, str):
        budget = parse_budget(budget)
    data = _report_data(Path(report))
    if data.height == 0:
        raise WorkbenchError("the report has no languages", where=str(report), fix="rebuild the report")
    gaps = [g for g in data["primary_gap_ndcg_at_10"].to_list() if g is not None]
    rates = [r for r in data["acceptance_rate"].to_list() if r is not None]
    if not gaps and not rates:
        raise WorkbenchError("the report has neither measured gaps nor audit acceptance rates", where=str(report),
                             fix="build the report from MIRACL results and an audit summary")
    median_gap = statistics.median(gaps) if gaps else None
    mean_rate = statistics.fmean(rates) if rates else 1.0
    costs = [c for c in data["cost_per_generated_usd"].to_list() if c is not None and c > 0]
    mean_cost = statistics.fmean(costs) if costs else None
    if budget.unit == "usd" and mean_cost is None:
        raise WorkbenchError("a dollar budget needs costs, but the audit has no cost_usd for any language",
                             where=str(report), fix="give the budget in examples (e.g. --budget 5000)")
    rows, left_out = [], []
    for rec in data.iter_rows(named=True):
        code = rec["language"]
        lang = registry.get(code)
        if not lang.generates:
            left_out.append({"language": code, "tier": lang.tier, "gap": rec["primary_gap_ndcg_at_10"],
                             "basis": "left out: eval-only language, nothing is generated for it"})
            continue
        basis = []
        gap = rec["primary_gap_ndcg_at_10"]
        if gap is None:
            if median_gap is None:
                gap, _ = MIN_GAP, basis.append("no gap measured: minimum weight")
            else:
                gap, _ = median_gap, basis.append(f"no gap measured: median gap {median_gap:.1f}")
        rate = rec["acceptance_rate"]
        if rate is None:
            rate, _ = mean_rate, basis.append(f"not audited: mean acceptance {mean_rate:.2f}")
        cost = rec["cost_per_generated_usd"] if rec["cost_per_generated_usd"] else mean_cost
        weight = max(gap, MIN_GAP) / max(rate, MIN_ACCEPTANCE)
        rows.append({"language": code, "tier": lang.tier, "gap": gap, "acceptance_rate": rate,
                     "cost_per_generated_usd": cost, "weight": weight, "basis": "; ".join(basis) or "measured"})
    if not rows:
        raise WorkbenchError("no generation language in the report", where=str(report),
                             fix="the report's languages are all eval-only; add an audit of generated languages")
    total_weight = sum(r["weight"] for r in rows)
    if budget.unit == "examples":
        exact = [budget.amount * r["weight"] / total_weight for r in rows]
        quotas = [math.floor(x) for x in exact]
        order = sorted(range(len(rows)), key=lambda i: (-(exact[i] - quotas[i]), -rows[i]["weight"], rows[i]["language"]))
        for i in order[: int(budget.amount) - sum(quotas)]:
            quotas[i] += 1
    else:
        spend = sum(r["weight"] * r["cost_per_generated_usd"] for r in rows)
        scale = budget.amount / spend
        quotas = [math.floor(r["weight"] * scale) for r in rows]
    for r, q in zip(rows, quotas):
        r["quota"] = q
        r["est_cost_usd"] = round(q * r["cost_per_generated_usd"], 4) if r["cost_per_generated_usd"] else None
        r["weight"] = round(r["weight"], 4)
    rows.sort(key=lambda r: (-r["quota"], r["language"]))
    schema = {"language": pl.Utf8, "tier": pl.Utf8, "gap": pl.Float64, "acceptance_rate": pl.Float64,
              "cost_per_generated_usd": pl.Float64, "weight": pl.Float64, "quota": pl.Int64,
              "est_cost_usd": pl.Float64, "basis": pl.Utf8}
    left = [{**dict.fromkeys(schema), **r, "quota": 0} for r in left_out]
    return pl.DataFrame(rows + left, schema=schema)


def plan_updates_from_report(report: Path, budget: str | None, registry: Registry,
                             conflicting: dict[str, object]) -> tuple[dict[str, object], pl.DataFrame]:
    """``[run]`` updates (languages + quotas) for ``workbench plan --from-report``, and the proposal.

    ``conflicting`` maps CLI option names to the values given; any that is set is an error, because
    the report decides languages and quotas.
    """
    for option, value in conflicting.items():
        if value:
            raise WorkbenchError(f"{option} cannot be combined with --from-report", where=option,
                                 fix="the report decides languages and quotas; leave it out")
    if budget is None:
        raise WorkbenchError("--from-report needs a total budget", where="--budget",
                             fix="add --budget 5000 (examples) or --budget '$20' (dollars)")
    proposal = propose_quotas(report, budget, registry)
    planned = proposal.filter(pl.col("quota") > 0)
    if planned.height == 0:
        raise WorkbenchError("the budget is too small to plan a single example", where="--budget",
                             fix="raise the budget")
    quotas = dict(zip(planned["language"].to_list(), planned["quota"].to_list()))
    return {"languages": list(quotas), "quotas": quotas, "quota": None}, proposal
