"""Filter throughput on synthetic-shaped examples assembled from real text, old and new code in one run.

Examples: every task family's fields filled with real Tatoeba sentences and XQuAD paragraphs
(:mod:`workbench.testing.samples`) in 12 languages over 7 scripts, written once as real
``generated/<lang>.parquet`` tables. Measured in one run, on the same tables:

* the whole filter stage (``run_filter``: read, rules, script check, LID ensemble, dedup, write) with
  1 worker at the default (strict) policy, by this checkout and by ``--baseline`` (a git revision,
  exported with ``git archive`` into a temporary folder), each in its own fresh process, in
  alternating order (``--repeats`` rounds); CPU-seconds of the process (and its workers) are the
  load-independent figure, the best round of each is reported;
* how much text reaches LID per example, how often each member is asked and the vote cache's hits;
* each LID member alone over the texts the filter sends to LID, the script check, the rules without
  LID and the dedup, on one core (this checkout).

The examples draw on a few hundred real sentences and 240 XQuAD paragraphs per language, so texts
repeat far more than in generated data and the LID vote cache (``filter.lid_cache_size``) hits
often: this checkout is also run with the cache off, the figure for data without repeats.

Run:  PYTHONPATH=. python benchmarks/filter_throughput.py [--examples 20000] [--baseline main] [--smoke]
Other processes share the cores: compare CPU-seconds and ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The whole-filter measurement, run in a fresh process with one code version first on the path.
CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
root, generated, out, overrides = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
sys.path.insert(0, root)
os.environ["WORKBENCH_LANGUAGES"] = str(Path(root) / "languages")
import polars as pl
from workbench.config import RunConfig
from workbench.filter.stage import run_filter
from workbench.languages import load_registry
from workbench.run import Run
from workbench.tables import GENERATED
registry = load_registry()
run = Run.create(out)
for path in sorted(generated.glob("*.parquet")):
    run.write_table("generated", path.stem, pl.read_parquet(path), GENERATED)
config = RunConfig.model_validate({"filter": overrides})
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
before, start = cpu(), time.perf_counter()
result = run_filter(run, config, registry)
languages = result.stats["languages"]
print(json.dumps({"cpu": cpu() - before, "wall": time.perf_counter() - start,
                  "examples": sum(v["generated_ok"] for v in languages.values()),
                  "accepted": sum(v["accepted"] for v in languages.values())}))
"""

LANGUAGES = ("de", "es", "ru", "ar", "hi", "th", "en", "sw", "am", "ja", "ms", "el")


def _export(revision: str, folder: Path) -> Path:
    """The code, language files and prompts of ``revision``, as files under ``folder``."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "workbench", "languages", "prompts"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _whole_filter(root: Path, generated: Path, out: Path, overrides: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(generated), str(out), json.dumps(overrides)],
                          check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--baseline", default="main", help="git revision to compare with ('' = none)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of old and new")
    parser.add_argument("--workers", type=int, default=1, help="filter.workers for the whole-filter runs")
    parser.add_argument("--subset", type=int, default=5_000, help="examples for the one-core component timings")
    parser.add_argument("--langdetect-texts", type=int, default=500, help="langdetect is slow: time it on this many")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny input, one round, no baseline, no lingua/langdetect: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.examples, args.subset, args.repeats, args.langdetect_texts, args.baseline = 240, 120, 1, 20, ""

    from workbench.config import RunConfig
    from workbench.families import FAMILIES
    from workbench.filter.lid import Ensemble
    from workbench.filter.rules import check_row, field_languages
    from workbench.filter.script import letter_count, script_share
    from workbench.filter.stage import _dedup_reasons
    from workbench.languages import load_registry
    from workbench.testing.samples import generated_table, synthetic_rows, tatoeba_sentences, xquad_paragraphs

    registry = load_registry()
    rng = random.Random(args.seed)
    english = tatoeba_sentences(args.data, registry.get("en"))
    per_language = args.examples // len(LANGUAGES) + 1
    tables = {}
    for code in LANGUAGES:
        own = tatoeba_sentences(args.data, registry.get(code))
        tables[code] = synthetic_rows(code, own, english, per_language, rng, xquad_paragraphs(args.data, code) or None)
    total = sum(len(rows) for rows in tables.values())
    cores = os.cpu_count() or 1
    print(f"# filter throughput: {total:,} examples in {len(LANGUAGES)} languages ({', '.join(LANGUAGES)}); "
          f"{cores} cores; load average {os.getloadavg()[0]:.1f} at start (other processes share the CPU)")
    print()

    rounds: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="filter-bench-") as tmp:
        generated = Path(tmp) / "generated"
        generated.mkdir()
        for code, rows in tables.items():
            generated_table(rows).write_parquet(generated / f"{code}.parquet")
        workers = {"workers": args.workers}
        versions = {"this checkout": (REPO, workers)}
        if not args.smoke:
            versions["this checkout, LID cache off"] = (REPO, {**workers, "lid_cache_size": 0})
        if args.baseline:
            old = _export(args.baseline, Path(tmp) / "baseline")
            versions = {f"baseline {args.baseline}": (old, workers), **versions}
        for index in range(args.repeats):
            order = list(versions.items()) if index % 2 == 0 else list(reversed(versions.items()))
            for number, (name, (root, overrides)) in enumerate(order):
                out = Path(tmp) / f"run-{index}-{number}"
                rounds.setdefault(name, []).append(_whole_filter(root, generated, out, overrides))
    print(f"Whole filter, {args.workers} worker(s), strict policy; best of {args.repeats} alternating round(s); "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| code | examples per CPU-second | CPU-s | wall s | accepted | rounds (examples per CPU-s) |")
    print("|---|---|---|---|---|---|")
    best = {}
    for name, results in rounds.items():
        top = min(results, key=lambda r: r["cpu"])
        best[name] = top["examples"] / top["cpu"]
        each = ", ".join(f"{r['examples'] / r['cpu']:,.0f}" for r in results)
        print(f"| {name} | **{best[name]:,.0f}** | {top['cpu']:.1f} | {top['wall']:.1f} | "
              f"{top['accepted'] / top['examples']:.1%} | {each} |")
    if args.baseline:
        old = best[f"baseline {args.baseline}"]
        print()
        print("; ".join(f"{name} / baseline: {rate / old:.2f}x" for name, rate in best.items() if name.startswith("this")))

    # Where one example's CPU goes (this checkout, one core).
    subset = [row for rows in tables.values() for row in rows[: args.subset // len(LANGUAGES)]]
    section = RunConfig().filter
    ensemble = Ensemble.load(registry, section)
    asked: dict[str, int] = {}
    vote = ensemble._vote

    def counting(member, snippet):
        asked[member.name] = asked.get(member.name, 0) + 1
        return vote(member, snippet)

    ensemble._vote = counting
    start = time.process_time()
    for row in subset:
        check_row(row, registry, ensemble, section)
    seconds = time.process_time() - start
    print()
    print(f"Rules + LID on {len(subset):,} examples, one core: {len(subset) / seconds:,.0f} examples per CPU-s; "
          "members asked per example: " + ", ".join(f"{m} {n / len(subset):.2f}" for m, n in asked.items())
          + f"; vote cache: {ensemble.cache_info()}")
    lid_texts = []
    for row in subset:
        for name in field_languages(row, row["family"]):
            text = row.get(name) or ""
            if letter_count(text[: section.lid_max_chars]) >= section.min_lid_letters:
                lid_texts.append(text[: section.lid_max_chars])
    texts_per_example = len(lid_texts) / len(subset)
    members = ["fasttext_lid176", "cld2", "langid", "cld3"] + ([] if args.smoke else ["lingua", "langdetect"])
    every = Ensemble.load(registry, section.model_copy(update={"members": members}))
    results: list[tuple[str, float, str]] = []
    for member in every.members:
        texts = lid_texts[: args.langdetect_texts] if member.name in ("langdetect", "lingua") else lid_texts
        member.predict(texts[0])  # load lazily built models outside the timing
        start = time.process_time()
        for text in texts:
            member.predict(text)
        seconds = time.process_time() - start
        results.append((f"LID member {member.name} alone", len(texts) / seconds / texts_per_example,
                        f"{seconds / len(texts) * 1e6:,.0f} µs a text over {len(texts):,} texts "
                        f"({texts_per_example:.2f} long LID texts per example)"))
    start = time.process_time()
    for row in subset:
        for name, code in field_languages(row, row["family"]).items():
            script_share(row.get(name) or "", registry.get(code).scripts)
    results.append(("script check alone", len(subset) / (time.process_time() - start), ""))

    class NoLid:
        def decide(self, text, code, votes=None):
            from workbench.filter.lid import Decision

            return Decision(None, 0.0, "?", ())

    start = time.process_time()
    for row in subset:
        check_row(row, registry, NoLid(), section)
    results.append(("rules + script + no_text (no LID)", len(subset) / (time.process_time() - start), ""))
    start = time.process_time()
    for rows in tables.values():
        part = rows[: args.subset // len(LANGUAGES)]
        _dedup_reasons(part, [True] * len(part), section)
    results.append(("dedup exact + MinHash near (query + example)", len(subset) / (time.process_time() - start), ""))
    print()
    print("| one core, this checkout | examples per CPU-second | notes |")
    print("|---|---|---|")
    for name, rate, note in results:
        print(f"| {name} | {rate:,.0f} | {note} |")
    print()
    print("Target: whole filter >= 2,000 examples per CPU-second with one worker at the strict policy.")
    print(f"Families: {', '.join(FAMILIES)} in turn; LID sees the first {section.lid_max_chars} characters of each field.")


if __name__ == "__main__":
    main()
