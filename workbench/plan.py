"""Plan stage: quotas × task families × sampled prompt placeholders -> ``plan/<lang>.parquet``.

Input: the language registry and the ``[run]`` section of the run config.
Output: ``plan/<lang>.parquet``, one row per generation slot (``slot_id``, ``language``, ``family``,
``seed`` and the placeholder columns of :data:`workbench.families.PLACEHOLDER_COLUMNS`).

Families are allocated in the paper's proportions (167k/122k/13k/17k/99k/89k) by the largest
remainder method, so 1,000 examples give 329/241/26/33/195/176. Placeholders are sampled from the
paper's vocabularies with a ``random.Random`` seeded by (seed, language): the same seed gives the
same plan on any machine.

Sizes are bounded by design: slots are streamed to Parquet in chunks of :data:`CHUNK_SLOTS` (one row
group each), so planning takes the same memory for 1,000 slots as for 1,000,000; and a plan above
:data:`MAX_PLAN_SLOTS` slots in all is refused before anything is written, with one line that
estimates what it would cost (requests, tokens, dollars). ``workbench plan RUN --dry-run`` prints
that estimate for any plan and writes nothing.

Example::

    workbench plan runs/demo --languages sw,ja,low --quota 50 --seed 7
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from workbench import checks
from workbench.config import RunConfig, RunSection
from workbench.errors import WorkbenchError
from workbench.families import FAMILIES, PLACEHOLDER_COLUMNS, family_shares
from workbench.languages import Language, Registry
from workbench.run import Folder, Run, StageResult
from workbench.runner import Stage, StageInput, run_stage
from workbench.tables import PLAN as PLAN_TABLE

STAGE = "plan"
CHUNK_SLOTS = 50_000  # rows built and written at a time (one Parquet row group)
# The most slots one plan may hold, over all its languages: twice the paper's ~507k examples. Later
# stages hold a plan's requests in memory (generate: ~7 KiB per slot, docs/scale.md), so a larger
# plan is split over several runs.
MAX_PLAN_SLOTS = 1_000_000


def allocate(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``total`` over ``shares`` by largest remainder; ties go to the earlier family."""
    exact = {name: total * share for name, share in shares.items()}
    counts = {name: int(value) for name, value in exact.items()}
    leftover = total - sum(counts.values())
    by_remainder = sorted(shares, key=lambda n: (-(exact[n] - counts[n]), list(shares).index(n)))
    for name in by_remainder[:leftover]:
        counts[name] += 1
    return counts


def bitext_partner(language: Language, registry: Registry, rng: random.Random) -> str:
    """English for every language but English; English pairs with a random high-tier language."""
    if language.code != "en":
        return "en"
    partners = sorted(lang.code for lang in registry.generation if lang.tier == "high" and lang.code != "en")
    return rng.choice(partners)


def plan_chunks(
    language: Language, quota: int, families: list[str], seed: int, registry: Registry, chunk: int = CHUNK_SLOTS
) -> Iterator[pl.DataFrame]:
    """The language's slots in order, ``chunk`` rows at a time (the same rows for any chunk size)."""
    rng = random.Random(f"{seed}:{language.code}")
    counts = allocate(quota, family_shares(families))
    rows: list[dict[str, object]] = []
    for name in families:
        family = FAMILIES[name]
        for index in range(counts[name]):
            row: dict[str, object] = dict.fromkeys(PLACEHOLDER_COLUMNS)
            row.update(
                slot_id=f"{language.code}-{name}-{index:05d}",
                language=language.code,
                family=name,
                seed=seed,
            )
            for placeholder, choices in family.placeholders.items():
                row[placeholder] = rng.choice(choices)
            if family.cross_lingual:
                row["target_language"] = bitext_partner(language, registry, rng)
            rows.append(row)
            if len(rows) == chunk:
                yield pl.DataFrame(rows, schema=PLAN_TABLE)
                rows = []
    if rows:
        yield pl.DataFrame(rows, schema=PLAN_TABLE)


def plan_language(
    language: Language, quota: int, families: list[str], seed: int, registry: Registry
) -> pl.DataFrame:
    """The language's whole plan table in memory (small plans, estimates, tests)."""
    return pl.concat(list(plan_chunks(language, quota, families, seed, registry)) or [pl.DataFrame(schema=PLAN_TABLE)])


def resolve_quotas(section: RunSection, registry: Registry) -> tuple[dict[str, int], dict[str, str]]:
    """Languages to plan with their quotas, and languages left out with the reason (``[run]``)."""
    for code in section.quotas:
        registry.get(code)  # unknown codes fail here, with a suggestion
    quotas: dict[str, int] = {}
    left_out: dict[str, str] = {}
    for language in registry.select(section.languages):
        if language.code in section.quotas:
            quotas[language.code] = section.quotas[language.code]
        elif not language.generates:
            left_out[language.code] = "eval-only language (no generation quota; give one in [run.quotas])"
        else:
            quotas[language.code] = section.quota or language.quota
    return quotas, left_out


def planned_languages(config: RunConfig, registry: Registry,
                      where: str = "run.languages") -> tuple[list[str] | None, dict[str, str]]:
    """``[run] languages`` without the languages the plan would leave out (None: nothing to drop, or a
    code the registry does not know, which the config check reports), and why each is left out.

    A language named by its code (``-l sw,yo``) is dropped from the list, so ``run.toml`` never
    carries it as if it were planned; one taken in by a selector (``miracl``) stays, with its reason.
    A list that would be left empty is an error naming the reasons, before anything is written.
    """
    from workbench.errors import UnknownLanguageError, WorkbenchError

    try:
        _, left_out = resolve_quotas(config.run, registry)
    except UnknownLanguageError:
        return None, {}
    tokens = [t for value in config.run.languages for t in str(value).replace(",", " ").split()]
    kept = [t for t in tokens if t not in left_out]
    if left_out and not kept:
        reasons = "; ".join(f"{code}: {why}" for code, why in left_out.items())
        raise WorkbenchError(f"no language to generate ({reasons})", where=where,
                             fix="add a generation language, or give each of these a quota in [run.quotas]")
    if kept == tokens:
        return None, left_out
    return kept, {code: f"{why}; dropped from [run] languages" if code in tokens else why for code, why in left_out.items()}
def resolve_plan_config(run_dir: Path, config_file: Path | None, updates: dict[str, Any], registry: Registry, *,
                        where: str, write: bool = True) -> tuple[Run, RunConfig, dict[str, str]]:
    """``workbench plan``: (the run, its config with the ``[run]`` ``updates``, the languages left out
    and why). Languages the plan leaves out (eval-only, no quota) never reach ``run.toml``'s list;
    ``where`` names the setting that chose them. The run is opened once, for both config reads."""
    from workbench.runconfig import open_run, resolve_run_config

    run = open_run(run_dir)
    preview = resolve_run_config(run, config_file, {"run": updates}, write=False)[1]
    kept, left_out = planned_languages(preview, registry, where)
    if kept is not None:
        updates = {**updates, "languages": kept}
    run, config = resolve_run_config(run, config_file, {"run": updates}, stages=("plan",), write=write)
    return run, config, left_out


def check_plan_size(quotas: dict[str, int], config: Any = None, registry: Registry | None = None) -> None:
    """Refuse a plan above :data:`MAX_PLAN_SLOTS` slots with one line; with ``config`` (a full run
    config) the line also estimates the generation it would take (:func:`estimate_plan`)."""
    total = sum(quotas.values())
    if total <= MAX_PLAN_SLOTS:
        return
    what = f"{total:,} slots"
    if config is not None and registry is not None:
        est = estimate_plan(config, registry, quotas)
        price = (f"${est['est_cost_usd']:,.2f} at {est['model']}'s price" if est["price_known"]
                 else f"price of {est['model']} unknown")
        what += (f" (about {est['requests']:,} requests, {est['est_prompt_tokens'] + est['est_completion_tokens']:,} "
                 f"tokens, {price}; plan tables about {est['plan_bytes'] / 1e9:,.1f} GB)")
    largest = max(quotas, key=quotas.__getitem__)
    raise WorkbenchError(
        f"a plan of {what} is above the bound of {MAX_PLAN_SLOTS:,} slots per run",
        where="run.quota" if len(set(quotas.values())) == 1 else f"run.quotas ({largest}: {quotas[largest]:,})",
        fix="lower --quota / [run] quota, or split the languages over several runs (docs/scale.md)")


# Sample size per language for estimates of large plans: the estimate of a sample is scaled up.
ESTIMATE_SAMPLE = 500


def estimate_plan(config: Any, registry: Registry, quotas: dict[str, int], cache_path: Any = None) -> dict[str, Any]:
    """Slots, requests, tokens and cost of generating a plan with these quotas; writes nothing.

    Plans up to :data:`ESTIMATE_SAMPLE` slots per language are built in memory and sized exactly
    like the real requests (the generate stage's dry run, less what ``cache_path`` already holds);
    a larger language is estimated from a sample of that size, scaled by quota / sample."""
    from workbench.generate.engine import estimate_generation

    section = config.run
    plans, scale = {}, {}
    for code, quota in quotas.items():
        sample = min(quota, ESTIMATE_SAMPLE)
        plans[code] = plan_language(registry.get(code), sample, section.families, section.seed, registry)
        scale[code] = quota / max(1, sample)
    scaled = any(factor != 1.0 for factor in scale.values())
    stats = estimate_generation(config.generate, registry, plans, cache_path=None if scaled else cache_path)
    per_language = stats["per_language"]
    for code, factor in scale.items():
        info = per_language[code]
        for key in SUMMED:
            info[key] = round(info[key] * factor, 6 if key == "est_cost_usd" else None)
        info["slots"] = quotas[code]
    for key in SUMMED:
        stats[key] = sum(info[key] for info in per_language.values())
    stats["est_cost_usd"] = round(stats["est_cost_usd"], 4)
    stats["plan_bytes"] = int(stats["slots"] * PLAN_BYTES_PER_SLOT)
    stats["scaled"] = scaled
    return stats


# per-language counts of an estimate that scale with the quota (summed into the totals)
SUMMED = ("slots", "requests", "brainstorm_requests", "example_requests", "est_prompt_tokens",
          "est_completion_tokens", "est_cost_usd")
PLAN_BYTES_PER_SLOT = 3.1  # zstd Parquet: 3.07 MB for 1,000,000 sw slots (docs/scale.md)


def run_plan(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """Write ``plan/<lang>.parquet`` for every selected language, through the runner (skipped when current)."""
    return run_stage(run, PLAN, config, registry)


def write_plan(inputs: StageInput, section: RunSection) -> StageResult:
    """The plan stage's body: one table of slots per selected language; plans of languages no longer
    selected are removed (later stages would generate them)."""
    run, registry = inputs.run, inputs.registry
    quotas, left_out = resolve_quotas(section, registry)
    result = StageResult(STAGE, stats={"left_out": left_out})
    check_plan_size(quotas)
    for code, quota in quotas.items():
        chunks = plan_chunks(registry.get(code), quota, section.families, section.seed, registry)
        path, rows = run.write_table_chunks(Folder.PLAN, code, chunks, PLAN_TABLE)
        result.outputs[run.relative(path)] = rows
    for code in run.table_languages(Folder.PLAN):
        if code not in quotas:
            run.table_path(Folder.PLAN, code).unlink()
    return result


def read_plan(run: Run) -> dict[str, pl.DataFrame]:
    return {code: run.read_table(Folder.PLAN, code, PLAN_TABLE) for code in run.table_languages(Folder.PLAN)}


PLAN = Stage(STAGE, reads=(), sections=(RunSection,), body=write_plan, writes=(Folder.PLAN,),
             languages=True, check=checks.plan)
