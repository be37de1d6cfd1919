"""Strict LID accuracy of the filter's accept decision on real Tatoeba sentences, per language and pair.

For every registry generation language L with a Tatoeba file (English from the English sides):

* positives: up to --per-language of L's sentences with at least ``filter.min_lid_letters`` letters;
* realistic-failure negatives, the answers a generator gives when it cannot write L: up to
  --neighbours sentences of each confusable neighbour (``confusable_group``: Russian for
  Belarusian, Hindi for Marathi, ...), --english English sentences, and --others sentences drawn
  from every other language.

Counting is strict: a neighbour's sentence accepted as L is a false positive, also when L's file
lists the neighbour in ``accept_also`` (those languages are marked ``*`` and reported apart).
Deciders: each member alone (its top label is L with prob >= min_prob; languages it covers),
``ensemble`` (the weighted vote with the run's policy) and ``filter`` (ensemble AND script check).
Recall is also given for sentences of >= --long-chars characters (the issue's target).

``--short`` adds short fields: 2-4-word snippets (the first words of a sentence, as a label or a
short query), judged as the filter judges short fields (LID when they have >= min_short_lid_letters
letters, else the script check alone): right-language acceptance, and rejection of English and
neighbour snippets.

Run:  PYTHONPATH=. python benchmarks/lid_accuracy.py [--allow-confusable] [--short] [--per-language-table]
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
from workbench.filter.rules import lid_reasons  # noqa: E402
from workbench.testing.samples import tatoeba_sentences  # noqa: E402
from workbench.filter.script import letter_count, script_share  # noqa: E402
from workbench.languages import TIERS, load_registry  # noqa: E402

KINDS = ("neighbour", "english", "other")


def _pct(a: int, b: int) -> float | None:
    return 100.0 * a / b if b else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-language", type=int, default=300)
    parser.add_argument("--neighbours", type=int, default=100, help="sentences per confusable neighbour")
    parser.add_argument("--english", type=int, default=100)
    parser.add_argument("--others", type=int, default=300)
    parser.add_argument("--long-chars", type=int, default=40, help="recall is also reported for sentences this long")
    parser.add_argument("--languages", default="", help="comma-separated codes (default: every covered language)")
    parser.add_argument("--allow-confusable", action="store_true",
                        help="the lenient policy (filter.allow_confusable = true), still counted strictly")
    parser.add_argument("--langdetect", action="store_true", help="add the slow langdetect member")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--min-prob", type=float, default=None)
    parser.add_argument("--short", action="store_true", help="also measure 2-4-word snippets (short fields)")
    parser.add_argument("--min-short-letters", type=int, default=None, help="filter.min_short_lid_letters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-language-table", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny sizes: checks the script runs (no figures)")
    args = parser.parse_args()
    if args.smoke:
        args.per_language, args.neighbours, args.english, args.others, args.languages = 8, 4, 4, 20, "sw,de"

    registry = load_registry()
    members = ["fasttext_lid176", "cld2", "langid"] + (["langdetect"] if args.langdetect else [])
    overrides: dict = {"members": members, "allow_confusable": args.allow_confusable}
    if args.threshold is not None:
        overrides["lid_threshold"] = args.threshold
    if args.min_prob is not None:
        overrides["member_min_prob"] = args.min_prob
    if args.min_short_letters is not None:
        overrides["min_short_lid_letters"] = args.min_short_letters
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
    asked = [c for c in args.languages.split(",") if c] or covered
    needed = set(asked) | {"en"} | {n for c in asked for n in registry.confusables(c) if n in pools}
    others_pool = {c: pools[c][: max(1, args.others // 10)] for c in covered}  # a slice of every language
    start = time.perf_counter()
    votes = {(code, i): ensemble.votes(text) for code in covered for i, text in enumerate(pools[code])
             if code in needed or i < len(others_pool[code])}
    vote_seconds = time.perf_counter() - start

    deciders = [*members, "ensemble", "filter"]
    # decider -> code -> counts: tp, fn, tp_long, fn_long, and fp / n per negative kind
    counts = {d: defaultdict(lambda: defaultdict(int)) for d in deciders}
    pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (asked, neighbour) -> [accepted, n]
    for code in asked:
        language = registry.get(code)
        neighbours = [c for c in registry.confusables(code) if c in pools]
        negatives = [("neighbour", (c, i)) for c in neighbours for i in range(min(args.neighbours, len(pools[c])))]
        if code != "en":
            negatives += [("english", ("en", i)) for i in range(min(args.english, len(pools["en"])))]
        rest = [(c, i) for c in covered if c not in (code, "en", *neighbours) for i in range(len(others_pool[c]))]
        negatives += [("other", key) for key in rng.sample(rest, min(args.others, len(rest)))]
        covering = set(ensemble.covers(code))
        accept = ensemble.accept_set(code)
        for kind, key in [("positive", (code, i)) for i in range(len(pools[code]))] + negatives:
            text = pools[key[0]][key[1]]
            member_votes = votes[key]
            decision = ensemble.decide(text, code, member_votes)
            share = script_share(text, language.scripts)
            script_ok = share is None or share >= section.script_threshold
            verdicts = {"ensemble": bool(decision.accepted), "filter": bool(decision.accepted) and script_ok}
            for vote in member_votes:
                if vote.member in covering:
                    verdicts[vote.member] = vote.label in accept and vote.prob >= ensemble.min_prob_for(code)
            for decider, accepted in verdicts.items():
                cell = counts[decider][code]
                if kind == "positive":
                    cell["tp" if accepted else "fn"] += 1
                    if len(text) >= args.long_chars:
                        cell["tp_long" if accepted else "fn_long"] += 1
                else:
                    cell[f"n_{kind}"] += 1
                    cell[f"fp_{kind}"] += accepted
            if kind == "neighbour":
                pairs[(code, key[0])][0] += bool(decision.accepted) and script_ok
                pairs[(code, key[0])][1] += 1

    def metrics(cell: dict) -> dict[str, float | None]:
        fp = sum(cell[f"fp_{k}"] for k in KINDS)
        out = {
            "P": _pct(cell["tp"], cell["tp"] + fp) if cell["tp"] + fp else 100.0,
            "R": _pct(cell["tp"], cell["tp"] + cell["fn"]),
            "R_long": _pct(cell["tp_long"], cell["tp_long"] + cell["fn_long"]),
        }
        for kind in KINDS:
            out[f"acc_{kind}"] = _pct(cell[f"fp_{kind}"], cell[f"n_{kind}"])
        return out

    def macro(values: list[float | None]) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    special = {c for c in asked if registry.get(c).accept_also}
    print(f"# Strict LID accept decision on Tatoeba: {len(asked)} languages asked; policy: "
          f"{'allow_confusable (lenient)' if section.allow_confusable else 'strict + accept_also'}; "
          f"threshold={section.lid_threshold} (+ clear majority), member_min_prob={section.member_min_prob}; "
          f"votes for {len(votes)} sentences in {vote_seconds:.1f}s")
    missing = [lang.code for lang in registry.generation if lang.code not in pools]
    print(f"# not covered (no Tatoeba file): {len(missing)}: {', '.join(missing)}")
    print(f"# accept_also languages (marked *; a neighbour accepted still counts as a false positive): "
          f"{', '.join(sorted(special)) or '-'}")
    print()
    print("Macro over languages, % (n languages). P = strict precision over positives + all negatives; R = recall; "
          f"R{args.long_chars}+ = recall on sentences of >= {args.long_chars} chars; "
          "neighbour / English / other = share of those negatives accepted.")
    print()
    print("| decider | scope | P | R | R%d+ | neighbour acc. | English acc. | other acc. |" % args.long_chars)
    print("|---|---|---|---|---|---|---|---|")
    for decider in deciders:
        for scope, codes in (("all", [c for c in asked if c in counts[decider]]),
                             ("outside accept_also", [c for c in asked if c in counts[decider] and c not in special]),
                             *((tier, [c for c in asked if c in counts[decider] and registry.get(c).tier == tier])
                               for tier in TIERS)):
            if not codes or (decider not in ("ensemble", "filter") and scope not in ("all",)):
                continue
            rows = [metrics(counts[decider][c]) for c in codes]
            cells = [_fmt(macro([r[k] for r in rows])) for k in ("P", "R", "R_long", *(f"acc_{k}" for k in KINDS))]
            print(f"| {decider} | {scope} ({len(codes)}) | " + " | ".join(cells) + " |")
    print()
    print("Confusable pairs (filter): share of the neighbour's sentences accepted as the asked language")
    print()
    print("| asked | neighbour | accepted / n | % |")
    print("|---|---|---|---|")
    for (code, neighbour), (acc, n) in sorted(pairs.items()):
        mark = "*" if neighbour in registry.accept_also(code) else ""
        print(f"| {code} | {neighbour}{mark} | {acc} / {n} | {_fmt(_pct(acc, n))} |")
    print()
    below = []
    for code in asked:
        m = metrics(counts["filter"][code])
        misses = []
        if m["P"] is not None and m["P"] < 99.0:
            misses.append(f"P {m['P']:.1f}")
        if m["R_long"] is not None and m["R_long"] < 95.0:
            misses.append(f"R{args.long_chars}+ {m['R_long']:.1f}")
        if code not in special and m["acc_neighbour"] is not None and m["acc_neighbour"] > 2.0:
            misses.append(f"neighbour accepted {m['acc_neighbour']:.1f}%")
        if misses:
            seen = defaultdict(int)
            for i, text in enumerate(pools[code]):
                decision = ensemble.decide(text, code, votes[(code, i)])
                if not decision.accepted:
                    seen[decision.seen_as] += 1
            top = ", ".join(f"{k}:{v}" for k, v in sorted(seen.items(), key=lambda kv: -kv[1])[:3])
            below.append(f"  {code}{'*' if code in special else ''} ({registry.get(code).tier}): {'; '.join(misses)}"
                         f"  | its rejected sentences seen as {top or '-'} | covered by {','.join(ensemble.covers(code))}")
    print(f"filter languages below target (P >= 99, R{args.long_chars}+ >= 95, neighbour accepted <= 2%): {len(below)}")
    print("\n".join(below))
    if args.per_language_table:
        print()
        print(f"| lang | tier | P | R | R{args.long_chars}+ | neighbour acc. | English acc. | other acc. |")
        print("|---|---|---|---|---|---|---|---|")
        for code in asked:
            m = metrics(counts["filter"][code])
            cells = [_fmt(m[k]) for k in ("P", "R", "R_long", *(f"acc_{k}" for k in KINDS))]
            print(f"| {code}{'*' if code in special else ''} | {registry.get(code).tier} | " + " | ".join(cells) + " |")
    if args.short:
        _short_snippets(args, registry, ensemble, section, pools, asked)


def _short_snippets(args, registry, ensemble, section, pools, asked) -> None:
    """Short fields (2-4 words) judged as rules.check_row judges a lone short field."""
    rng = random.Random(args.seed + 1)

    def snippet(sentence: str) -> str:
        return " ".join(sentence.split()[: rng.randint(2, 4)])

    def accepted(text: str, code: str) -> bool:
        share = script_share(text, registry.get(code).scripts)
        if share is not None and share < section.script_threshold:
            return False
        if letter_count(text) < section.min_short_lid_letters:
            return True  # too short for LID: the script check decides
        return not lid_reasons(ensemble.decide(text, code), ["short"], short=True)

    n = min(100, args.per_language)
    rows = []
    for code in asked:
        if registry.get(code).unspaced:
            continue  # no spaces: a "2-4-word" snippet is not defined
        own = [snippet(s) for s in pools[code][:n]]
        english = [snippet(s) for s in pools["en"][:n]] if code != "en" else []
        neighbours = [snippet(s) for c in registry.confusables(code) if c in pools
                      and c not in registry.accept_also(code) for s in pools[c][: n // 2]]
        rows.append((code, _pct(sum(accepted(t, code) for t in own), len(own)),
                     _pct(sum(accepted(t, code) for t in english), len(english)),
                     _pct(sum(accepted(t, code) for t in neighbours), len(neighbours))))
    print()
    print(f"Short fields (2-4 words, min_short_lid_letters={section.min_short_lid_letters}): macro % over "
          f"{len(rows)} spaced languages")
    print()
    print("| right language accepted | English accepted | neighbour accepted |")
    print("|---|---|---|")
    print("| " + " | ".join(_fmt(sum(v for v in col if v is not None) / max(1, sum(v is not None for v in col)))
                            for col in list(zip(*rows))[1:]) + " |")
    worst = sorted(rows, key=lambda r: r[1] if r[1] is not None else 100)[:8]
    print("lowest right-language acceptance: " + ", ".join(f"{c} {_fmt(r)}" for c, r, _, _ in worst))


if __name__ == "__main__":
    main()
