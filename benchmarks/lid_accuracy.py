"""LID accuracy of the filter's accept decision on real Tatoeba sentences, per language and tier.

For every registry generation language with a Tatoeba file (English from the English sides):
positives are up to --per-language of its sentences with at least ``filter.min_lid_letters``
letters (shorter texts never reach LID: the script check decides them); negatives are up to
--neighbours sentences from each confusable neighbour plus --others sentences drawn from all other
covered languages. For each decision maker we count precision and recall of "accept as language L":

* each member alone (accept when its top label is L with prob >= member_min_prob; only for the
  languages it covers),
* ``ensemble``: the weighted vote (filter.lid_threshold),
* ``filter``: the ensemble AND the script check (what the filter applies to one field).

Run:  PYTHONPATH=. python benchmarks/lid_accuracy.py [--strict] [--langdetect] [--threshold 0.5] [--per-language-table]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.config import FilterSection  # noqa: E402
from workbench.filter.lid import Ensemble  # noqa: E402
from workbench.filter.samples import tatoeba_sentences  # noqa: E402
from workbench.filter.script import letter_count, script_share  # noqa: E402
from workbench.languages import TIERS, load_registry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-language", type=int, default=300)
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--others", type=int, default=300)
    parser.add_argument("--allow-confusable", dest="allow_confusable", action="store_true", default=None,
                        help="accept the confusable group (the config default)")
    parser.add_argument("--strict", dest="allow_confusable", action="store_false",
                        help="only the exact language counts; confusable neighbours are negatives")
    parser.add_argument("--langdetect", action="store_true", help="add the slow langdetect member")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--min-prob", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-language-table", action="store_true")
    args = parser.parse_args()

    registry = load_registry()
    overrides: dict = {} if args.allow_confusable is None else {"allow_confusable": args.allow_confusable}
    members = ["fasttext_lid176", "cld2", "langid"] + (["langdetect"] if args.langdetect else [])
    overrides["members"] = members
    if args.threshold is not None:
        overrides["lid_threshold"] = args.threshold
    if args.min_prob is not None:
        overrides["member_min_prob"] = args.min_prob
    section = FilterSection(**overrides)
    ensemble = Ensemble.load(registry, section)
    rng = random.Random(args.seed)

    pools: dict[str, list[str]] = {}
    for language in registry.generation:
        sentences = [s for s in tatoeba_sentences(args.data, language) if letter_count(s) >= section.min_lid_letters]
        if sentences:
            rng.shuffle(sentences)
            pools[language.code] = sentences[: args.per_language]
    covered = sorted(pools)
    start = time.perf_counter()
    votes = {(code, i): ensemble.votes(text) for code in covered for i, text in enumerate(pools[code])}
    vote_seconds = time.perf_counter() - start

    deciders = [*members, "ensemble", "filter"]
    counts = {d: defaultdict(lambda: [0, 0, 0]) for d in deciders}  # code -> [tp, fp, fn]
    for code in covered:
        language = registry.get(code)
        neighbours = [c for c in registry.confusables(code) if c in pools]
        negatives = [(c, i) for c in neighbours for i in range(min(args.neighbours, len(pools[c])))]
        others = [(c, i) for c in covered if c != code and c not in neighbours for i in range(len(pools[c]))]
        negatives += rng.sample(others, min(args.others, len(others)))
        accept = ensemble.accept_set(code)
        covering = set(ensemble.covers(code))
        for key in [(code, i) for i in range(len(pools[code]))] + negatives:
            positive = key[0] in accept  # with allow_confusable, a neighbour's text is a right accept
            text = pools[key[0]][key[1]]
            member_votes = votes[key]
            decision = ensemble.decide(text, code, member_votes)
            share = script_share(text, language.scripts)
            script_ok = share is None or share >= section.script_threshold
            verdicts = {"ensemble": bool(decision.accepted), "filter": bool(decision.accepted) and script_ok}
            for vote in member_votes:
                if vote.member in covering:
                    verdicts[vote.member] = vote.label in accept and vote.prob >= section.member_min_prob
            for decider, accepted in verdicts.items():
                cell = counts[decider][code]
                if accepted and positive:
                    cell[0] += 1
                elif accepted:
                    cell[1] += 1
                elif positive:
                    cell[2] += 1

    def pr(cell: list[int]) -> tuple[float, float]:
        tp, fp, fn = cell
        return (100.0 * tp / (tp + fp) if tp + fp else 100.0, 100.0 * tp / (tp + fn) if tp + fn else 0.0)

    print(f"# LID accept decision on Tatoeba: {len(covered)} languages, "
          f"allow_confusable={section.allow_confusable}, threshold={section.lid_threshold}, "
          f"member_min_prob={section.member_min_prob}; votes for {len(votes)} sentences in {vote_seconds:.1f}s")
    missing = [lang.code for lang in registry.generation if lang.code not in pools]
    print(f"# not covered (no Tatoeba file): {len(missing)}: {', '.join(missing)}")
    print()
    header = "| decider | " + " | ".join(f"{t} P / R (n)" for t in (*TIERS, "all")) + " |"
    print(header)
    print("|" + "---|" * (len(TIERS) + 2))
    for decider in deciders:
        cells = []
        for tier in (*TIERS, "all"):
            codes = [c for c in counts[decider] if tier == "all" or registry.get(c).tier == tier]
            if not codes:
                cells.append("-")
                continue
            ps, rs = zip(*(pr(counts[decider][c]) for c in codes))
            cells.append(f"{sum(ps) / len(ps):.1f} / {sum(rs) / len(rs):.1f} ({len(codes)})")
        print(f"| {decider} | " + " | ".join(cells) + " |")
    print()
    below = [(c, *pr(counts["ensemble"][c])) for c in covered]
    below = [b for b in below if b[1] < 98.0 or b[2] < 90.0]
    print(f"ensemble languages below P 98 or R 90 ({len(below)}):")
    for code, p, r in below:
        tp, fp, fn = counts["ensemble"][code]
        print(f"  {code} ({registry.get(code).tier}): P {p:.1f} R {r:.1f}  tp={tp} fp={fp} fn={fn}  covered by {','.join(ensemble.covers(code))}")
    if args.per_language_table:
        print()
        print("| lang | tier | " + " | ".join(deciders) + " |")
        print("|" + "---|" * (len(deciders) + 2))
        for code in covered:
            cells = [("%.0f/%.0f" % pr(counts[d][code])) if code in counts[d] else "n/a" for d in deciders]
            print(f"| {code} | {registry.get(code).tier} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
