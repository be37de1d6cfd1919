"""The filter's language decision, measured out of sample: right language kept, wrong answers accepted.

Sources:

* **Tatoeba** (``../shared/data/tatoeba``), for every generation language with a file (English from
  the English sides): sentences with at least ``filter.min_lid_letters`` letters, shuffled with
  ``--seed`` and cut into two disjoint halves. The **fitting half** is the only data the per-language
  settings (``lid_threshold`` / ``lid_min_prob`` in ``languages/*.toml``) are chosen on (``--fit``);
  every rate printed is on the **reporting half**. fastText lid.176, a member, was trained on
  Tatoeba, so these rates still flatter it.
* **A second source** (``--second-source``), never used for fitting and not Tatoeba: MIRACL dev
  queries (18 languages, human-written questions) and the Yoruba MIRACL passages (Wikipedia, which
  lid.176 did see), XQuAD questions and paragraphs (8 languages, professional translations).

Negatives are the answers a generator gives when it cannot write language L: sentences of each
confusable neighbour (``confusable_group``: Russian for Belarusian, ...), English, and sentences
of all other languages. Counting is strict: a neighbour accepted is a false positive, also when L's
file lists it in ``accept_also`` (those languages are marked ``*`` and reported apart).

Deciders: each member alone (over the languages it covers), member sets voting with the run's
policy, and ``filter`` (the configured members + no_text + script check + the short/long rule of
:func:`workbench.filter.rules.lone_field_reasons`). Every rate is ``k/n`` with an exact
Clopper-Pearson 95% interval; precision is undefined when nothing was accepted. ``--share-table``
gives the expected precision when 5/20/50/80% of a language's answers are English or the neighbour.

``--short``: 2-4-word snippets (labels, short queries) of the reporting half, judged as the filter
judges a lone short field. Targets over languages without ``accept_also``: neighbour accepted <= 5%,
English <= 1%, right language kept >= 90%.

``--fit``: choose the per-language settings on the fitting half (see :func:`fit_language`) and print
them next to the language files' values; ``--write`` puts them into the files.
``--text-floor``: the letter counts behind ``filter.min_text_letters`` / ``min_text_share``.

Run:  PYTHONPATH=. python benchmarks/lid_accuracy.py [--short] [--second-source] [--share-table]
      [--per-language-table] [--compare-members] [--fit [--write]] [--text-floor] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import beta

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.config import FilterSection  # noqa: E402
from workbench.filter.lid import Ensemble  # noqa: E402
from workbench.filter.members import UNSUPPORTED  # noqa: E402
from workbench.filter.rules import is_text, lone_field_reasons  # noqa: E402
from workbench.filter.script import letter_count, text_letters  # noqa: E402
from workbench.languages import Registry, load_registry  # noqa: E402
from workbench.testing.samples import tatoeba_sentences, xquad_paragraphs  # noqa: E402

KINDS = ("neighbour", "english", "other")
TODAY = ("fasttext_lid176", "cld2", "langid")
CANDIDATES = ("lingua", "cld3")
SHARES = (0.05, 0.2, 0.5, 0.8)


# --- statistics ------------------------------------------------------------------------------
def interval(k: int, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 95% interval of a proportion k/n."""
    low = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return low, high


def rate(k: int, n: int) -> str:
    """``12/300 4.0% [2.1-6.9]``; ``-`` when n = 0."""
    if n == 0:
        return "-"
    low, high = interval(k, n)
    return f"{k}/{n} {100 * k / n:.1f}% [{100 * low:.1f}-{100 * high:.1f}]"


def _percent(k: int, n: int) -> str:
    return f"{100 * k / n:.0f}" if n else "-"


def precision_at(recall: tuple[int, int], wrong: tuple[int, int], share: float) -> str:
    """Expected precision if ``share`` of the answers are of the wrong kind: (1-s)R / ((1-s)R + sF),
    with a conservative interval from the two Clopper-Pearson intervals (R low with F high, and back)."""
    (kr, nr), (kf, nf) = recall, wrong
    if nr == 0 or nf == 0:
        return "-"

    def value(r: float, f: float) -> float | None:
        kept = (1 - share) * r
        return None if kept + share * f == 0 else kept / (kept + share * f)

    (r_low, r_high), (f_low, f_high) = interval(kr, nr), interval(kf, nf)
    point = value(kr / nr, kf / nf)
    if point is None:
        return "undefined"
    low, high = value(r_low, f_high), value(r_high, f_low)
    return f"{100 * point:.1f} [{100 * (low or 0):.1f}-{100 * (high or 0):.1f}]"


@dataclass
class Counts:
    """Accepted / asked per kind of text for one decider and language."""

    cells: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(self, kind: str, accepted: bool) -> None:
        cell = self.cells[kind]
        cell[0] += bool(accepted)
        cell[1] += 1

    def get(self, kind: str) -> tuple[int, int]:
        k, n = self.cells.get(kind, (0, 0))
        return k, n

    def precision(self) -> tuple[int, int]:
        tp = self.get("positive")[0]
        fp = sum(self.get(kind)[0] for kind in KINDS)
        return tp, tp + fp

    def merged(self, other: "Counts") -> "Counts":
        out = Counts()
        for source in (self, other):
            for kind, (k, n) in source.cells.items():
                out.cells[kind][0] += k
                out.cells[kind][1] += n
        return out


def pooled(counts: list[Counts]) -> Counts:
    total = Counts()
    for c in counts:
        total = total.merged(c)
    return total


def precision_text(counts: Counts) -> str:
    k, n = counts.precision()
    return "undefined (nothing accepted)" if n == 0 else rate(k, n)


# --- data ------------------------------------------------------------------------------------
def tatoeba_halves(data: Path, registry: Registry, section: FilterSection, seed: int,
                   per_language: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per language: (fitting half, reporting half), disjoint, each at most ``per_language`` sentences."""
    fitting, reporting = {}, {}
    for language in registry.generation:
        sentences = [s for s in tatoeba_sentences(data, language) if letter_count(s) >= section.min_lid_letters]
        if not sentences:
            continue
        random.Random(f"{seed}-{language.code}").shuffle(sentences)
        half = len(sentences) // 2
        fitting[language.code] = sentences[:half][:per_language]
        reporting[language.code] = sentences[half:][:per_language]
    return fitting, reporting


def second_source(data: Path, limit: int, seed: int) -> dict[str, dict[str, list[str]]]:
    """kind -> language -> texts: MIRACL dev queries and yo passages, XQuAD questions and paragraphs."""
    out: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for path in sorted((data / "miracl").glob("topics.miracl-v1.0-*-dev.tsv")):
        code = path.name.split("-")[2]
        out["MIRACL query"][code] = [line.split("\t", 1)[1].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    yo = data / "miracl" / "corpus" / "yo" / "corpus.jsonl.gz"
    if yo.is_file():
        import gzip

        with gzip.open(yo, "rt", encoding="utf-8") as handle:
            passages = [json.loads(line)["text"] for line in handle]
        out["MIRACL passage"]["yo"] = [p for p in passages if letter_count(p) >= 40]
    for folder in sorted((data / "xquad").glob("*/")):
        code = folder.name
        queries = folder / "queries.jsonl"
        if queries.is_file():
            out["XQuAD question"][code] = [json.loads(line)["text"] for line in queries.read_text(encoding="utf-8").splitlines()]
        out["XQuAD paragraph"][code] = xquad_paragraphs(data, code)
    for kind in out:
        for code, texts in out[kind].items():
            texts = list(dict.fromkeys(t for t in texts if t.strip()))
            random.Random(f"{seed}-{kind}-{code}").shuffle(texts)
            out[kind][code] = texts[:limit]
    return out


def snippet(sentence: str, rng: random.Random) -> str:
    return " ".join(sentence.split()[: rng.randint(2, 4)])


# --- deciding ---------------------------------------------------------------------------------
class _BeforeShortRule(Ensemble):
    """The ensemble as the filter used it before issue 23 on short fields: only another language's
    majority rejected (the likely-wrong-answer tie rule off)."""

    def decide(self, text, code, votes=None):
        return dataclasses.replace(super().decide(text, code, votes), english=0.0, neighbour=0.0)


class Judge:
    """Every member's votes on each text, asked once; decisions for any member set derive from them."""

    def __init__(self, registry: Registry, section: FilterSection, members: tuple[str, ...]):
        self.registry = registry
        self.section = section
        self.ensemble = Ensemble.load(registry, section.model_copy(update={"members": list(members)}))
        self._votes: dict[str, tuple] = {}
        self.seconds = 0.0

    def votes(self, text: str) -> tuple:
        if text not in self._votes:
            start = time.process_time()
            self._votes[text] = self.ensemble.votes(text)
            self.seconds += time.process_time() - start
        return self._votes[text]

    def accepts(self, text: str, code: str, members: tuple[str, ...], ensemble: Ensemble | None = None,
                section: FilterSection | None = None) -> bool:
        """The filter's verdict on ``text`` as a lone field in ``code``, with only ``members`` voting."""
        votes = tuple(v for v in self.votes(text) if v.member in members)
        return not lone_field_reasons(text, code, self.registry, ensemble or self.ensemble,
                                      section or self.section, votes)

    def member_accepts(self, text: str, code: str, member: str) -> bool | None:
        """One member alone: its top label is in the accept set with prob >= min_prob (None: not covered)."""
        if self.ensemble._label_of[member].get(code, UNSUPPORTED) == UNSUPPORTED:
            return None
        vote = next(v for v in self.votes(text) if v.member == member)
        return vote.label in self.ensemble.accept_set(code) and vote.prob >= self.ensemble.min_prob_for(code)


def negatives(code: str, pools: dict[str, list[str]], registry: Registry, args, rng: random.Random):
    """(kind, text) of the realistic wrong answers for ``code`` from ``pools``."""
    out = []
    for neighbour in sorted(registry.confusables(code)):
        out += [("neighbour", neighbour, t) for t in pools.get(neighbour, [])[: args.neighbours]]
    if code != "en":
        out += [("english", "en", t) for t in pools.get("en", [])[: args.english]]
    rest = [(c, t) for c in sorted(pools) if c not in (code, "en", *registry.confusables(code))
            for t in pools[c][: max(1, args.others // 10)]]
    out += [("other", c, t) for c, t in rng.sample(rest, min(args.others, len(rest)))]
    return out


def measure(judge: Judge, pools: dict[str, list[str]], asked: list[str], deciders: dict[str, tuple[str, ...]],
            args, long_chars: int, ensemble: Ensemble | None = None):
    """decider -> code -> Counts, and (asked, neighbour) -> [accepted, n] for the 'filter' decider."""
    registry = judge.registry
    counts: dict[str, dict[str, Counts]] = defaultdict(lambda: defaultdict(Counts))
    pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    rng = random.Random(args.seed)
    for code in asked:
        cases = [("positive", code, t) for t in pools[code]] + negatives(code, pools, registry, args, rng)
        for kind, source, text in cases:
            for name, members in deciders.items():
                if name.endswith(" alone"):
                    verdict = judge.member_accepts(text, code, members[0])
                    if verdict is None:
                        continue
                else:
                    verdict = judge.accepts(text, code, members, ensemble)
                counts[name][code].add(kind, verdict)
                if kind == "positive" and len(text) >= long_chars:
                    counts[name][code].add("positive_long", verdict)
                if name == "filter" and kind == "neighbour":
                    pairs[(code, source)][0] += verdict
                    pairs[(code, source)][1] += 1
    return counts, pairs


# --- printing ---------------------------------------------------------------------------------
def print_decider_table(counts, deciders, scopes: dict[str, list[str]], long_chars: int) -> None:
    print(f"| decider | languages | right kept | R{long_chars}+ | neighbour acc. | English acc. | other acc. | precision |")
    print("|---|---|---|---|---|---|---|---|")
    for name in deciders:
        for scope, codes in scopes.items():
            present = [counts[name][c] for c in codes if c in counts[name]]
            if not present or (name.endswith(" alone") and scope != "all"):
                continue
            total = pooled(present)
            cells = [rate(*total.get(k)) for k in ("positive", "positive_long", *KINDS)]
            print(f"| {name} | {scope} ({len(present)}) | " + " | ".join(cells) + f" | {precision_text(total)} |")


def print_per_language(counts: dict[str, Counts], registry: Registry, long_chars: int) -> None:
    print(f"| lang | tier | right kept | R{long_chars}+ | neighbour acc. | English acc. | other acc. | precision |")
    print("|---|---|---|---|---|---|---|---|")
    for code, cell in counts.items():
        mark = "*" if registry.get(code).accept_also else ""
        cells = [rate(*cell.get(k)) for k in ("positive", "positive_long", *KINDS)]
        print(f"| {code}{mark} | {registry.get(code).tier} | " + " | ".join(cells) + f" | {precision_text(cell)} |")


def print_share_table(counts: dict[str, Counts], registry: Registry) -> None:
    print("Expected precision (%, conservative 95% interval) if this share of a language's answers is in "
          "English / in the neighbour language(s), from the reporting half's rates (filter)")
    print()
    header = " | ".join(f"{int(100 * s)}% {kind}" for kind in ("English", "neighbour") for s in SHARES)
    print(f"| lang | {header} |")
    print("|---|" + "---|" * (2 * len(SHARES)))
    rows = list(counts.items()) + [("all (pooled)", pooled(list(counts.values())))]
    for code, cell in rows:
        recall = cell.get("positive")
        cells = [precision_at(recall, cell.get(kind), s) for kind in ("english", "neighbour") for s in SHARES]
        print(f"| {code} | " + " | ".join(cells) + " |")


# --- fitting ----------------------------------------------------------------------------------
THRESHOLDS = (0.5, 0.67, 0.75, 0.9, 1.0)
MIN_PROBS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)


def _with_setting(ensemble: Ensemble, code: str, threshold: float | None, min_prob: float | None) -> Ensemble:
    languages = [lang.model_copy(update={"lid_threshold": threshold, "lid_min_prob": min_prob})
                 if lang.code == code else lang for lang in ensemble.registry]
    registry = Registry(languages, ensemble.registry.directory)
    return Ensemble(ensemble.members, ensemble._label_of, registry, ensemble.weights, ensemble.threshold,
                    ensemble.member_min_prob, ensemble.allow_confusable, ensemble.max_chars)


def fit_language(judge: Judge, code: str, fitting: dict[str, list[str]], args, members) -> tuple:
    """The language's (lid_threshold, lid_min_prob) from the fitting half, None = the run default.

    1. If more than 2% of the neighbours' sentences are accepted at the default, take the setting
       with the highest recall on >= 40-char sentences among those accepting <= 2% (none: the
       fewest accepted, then the highest recall).
    2. Else, if recall on >= 40-char sentences is below 90% and min_prob 0.15 raises it by >= 3
       points without accepting one more wrong answer of any kind, take min_prob 0.15.
    Returns (threshold, min_prob, note)."""
    def score(threshold, min_prob):
        ensemble = _with_setting(judge.ensemble, code, threshold, min_prob)
        counts, _ = measure(judge, {**fitting}, [code], {"filter": members}, args, 40, ensemble)
        cell = counts["filter"][code]
        k_long, n_long = cell.get("positive_long")
        k_nb, n_nb = cell.get("neighbour")
        wrong = sum(cell.get(kind)[0] for kind in KINDS)
        return (k_long / n_long if n_long else 0.0), (k_nb / n_nb if n_nb else 0.0), n_nb, wrong

    recall, neighbour, n_nb, wrong = score(None, None)
    if n_nb and neighbour > 0.02:
        grid = [(t, p, *score(t, p)) for t in THRESHOLDS for p in MIN_PROBS]
        ok = [g for g in grid if g[3] <= 0.02]
        best = max(ok, key=lambda g: g[2]) if ok else min(grid, key=lambda g: (g[3], -g[2]))
        t, p = best[0], best[1]
        return (None if t == judge.section.lid_threshold else t, None if p == judge.section.member_min_prob else p,
                f"neighbour accepted {100 * neighbour:.1f}% -> {100 * best[3]:.1f}%, R40+ {100 * recall:.1f}% -> "
                f"{100 * best[2]:.1f}% (fitting half, n={n_nb} neighbour sentences)")
    if recall < 0.9:
        low_recall, _, _, low_wrong = score(None, 0.15)
        if low_recall >= recall + 0.03 and low_wrong <= wrong:
            return (None, 0.15, f"R40+ {100 * recall:.1f}% -> {100 * low_recall:.1f}% at member_min_prob 0.15, "
                                f"wrong answers accepted unchanged ({wrong}) (fitting half)")
    return None, None, ""


def write_setting(path: Path, threshold: float | None, min_prob: float | None, note: str, seed: int) -> None:
    """Put the fitted values into a language file (and drop stale ones), with the measurement."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^lid_(threshold|min_prob) = .*\n", "", text)
    text = re.sub(r'(?m)^lid_policy = ".*"\n', "", text)
    lines = [f"lid_threshold = {threshold}  # strict-LID setting, fitted: see [sources] lid_policy\n"] if threshold else []
    lines += [f"lid_min_prob = {min_prob}  # strict-LID setting, fitted: see [sources] lid_policy\n"] if min_prob else []
    if lines:
        text = re.sub(r"(?m)^(quota = .*\n)", lambda m: "".join(lines) + m.group(1), text, count=1)
        text = text.rstrip("\n") + f'\nlid_policy = "{note}; benchmarks/lid_accuracy.py --fit --seed {seed}"\n'
    path.write_text(text, encoding="utf-8")


# --- the text floor ---------------------------------------------------------------------------
JUNK = ["{", "}", "[]", "{}", "3559", "4678,2042", "{'Worst'}", '{"label": "Sports"}', '["a", "b"]', "N/A",
        "null", "None", "1.", "2)", "—", "...", "?!", "12:45", "$100", "50%", "#1", "***", "```", '"', "''",
        "1, 2, 3", "(1)", "2024-01-01", "+1 555 0100", "{'S1': '", "१२३", "٣٥٥٩", "4678,2042 km", "1a"]


def text_floor(args, registry: Registry, section: FilterSection) -> None:
    texts = [(f"tatoeba {lang.code}", s) for lang in registry.generation for s in tatoeba_sentences(args.data, lang)]
    for kind, by_code in second_source(args.data, 10**9, args.seed).items():
        texts += [(f"{kind} {code}", t) for code, items in by_code.items() for t in items]
    stats = sorted(((letters / max(1, visible), letters, where, t) for where, t in texts
                    for letters, visible in [text_letters(t)]))
    print(f"# letters (with combining marks) / visible characters over {len(texts):,} real texts "
          "(Tatoeba, every language; MIRACL queries and yo passages; XQuAD questions and paragraphs)")
    for q in (0.0001, 0.001, 0.01):
        print(f"  {q:.2%} quantile of the share: {stats[int(q * len(stats))][0]:.3f}")
    print("  lowest: " + "; ".join(f"{s:.3f} {w} {t[:30]!r}" for s, _, w, t in stats[:5]))
    few = [(w, t) for _, letters, w, t in stats if letters < section.min_text_letters]
    print(f"  fewer than min_text_letters={section.min_text_letters} letters: {len(few)} {few[:5]}")
    print(f"  share below min_text_share={section.min_text_share}: {sum(s < section.min_text_share for s, *_ in stats)}")
    rejected = [t for _, t in texts if not is_text(t, section)]
    print(f"  real texts rejected as no_text: {len(rejected)} of {len(texts):,} {rejected[:5]}")
    print(f"# junk: {sum(not is_text(j, section) for j in JUNK)} of {len(JUNK)} rejected as no_text; passed: "
          f"{[j for j in JUNK if is_text(j, section)]}")


# --- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-language", type=int, default=300, help="sentences per language and half")
    parser.add_argument("--neighbours", type=int, default=100, help="sentences per confusable neighbour")
    parser.add_argument("--english", type=int, default=100)
    parser.add_argument("--others", type=int, default=300)
    parser.add_argument("--long-chars", type=int, default=40, help="recall is also reported for sentences this long")
    parser.add_argument("--languages", default="", help="comma-separated codes (default: every covered language)")
    parser.add_argument("--members", default="", help="the filter's members (default: the [filter] default)")
    parser.add_argument("--allow-confusable", action="store_true", help="the lenient policy, still counted strictly")
    parser.add_argument("--compare-members", action="store_true",
                        help="also each member alone and today's members with lingua / cld3 added")
    parser.add_argument("--short", action="store_true", help="2-4-word snippets (short fields)")
    parser.add_argument("--second-source", action="store_true", help="MIRACL and XQuAD (never used for fitting)")
    parser.add_argument("--share-table", action="store_true", help="precision at 5/20/50/80%% wrong answers")
    parser.add_argument("--per-language-table", action="store_true")
    parser.add_argument("--fit", action="store_true", help="fit per-language settings on the fitting half")
    parser.add_argument("--write", action="store_true", help="with --fit: write them into languages/*.toml")
    parser.add_argument("--text-floor", action="store_true", help="the letter counts behind no_text")
    parser.add_argument("--half", choices=("reporting", "fitting"), default="reporting",
                        help="which Tatoeba half to report on (choose members on the fitting half)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny input (a few languages, 20 sentences): seconds")
    args = parser.parse_args()
    if args.smoke:
        args.per_language, args.neighbours, args.english, args.others = 20, 10, 10, 20
        args.languages = args.languages or "sw,be,gl,de"

    registry = load_registry()
    section = FilterSection(allow_confusable=args.allow_confusable)
    members = tuple(args.members.split(",")) if args.members else tuple(section.members)
    section = section.model_copy(update={"members": list(members)})
    if args.text_floor:
        text_floor(args, registry, section)
        return
    every = tuple(dict.fromkeys((*members, *((*TODAY, *CANDIDATES) if args.compare_members else ()))))
    judge = Judge(registry, section, every)
    fitting, reporting = tatoeba_halves(args.data, registry, section, args.seed, args.per_language)
    covered = sorted(reporting)
    asked = [c for c in args.languages.split(",") if c] or covered
    special = {c for c in asked if registry.get(c).accept_also}
    deciders: dict[str, tuple[str, ...]] = {"filter": members}
    if args.compare_members:
        deciders = {**{f"{m} alone": (m,) for m in every},
                    "today: " + "+".join(TODAY): TODAY,
                    **{f"today + {m}": (*TODAY, m) for m in CANDIDATES},
                    "today + " + " + ".join(CANDIDATES): (*TODAY, *CANDIDATES),
                    **deciders}
    scopes = {"all": asked, "outside accept_also": [c for c in asked if c not in special]}
    print(f"# LID accept decision, out of sample. Filter members: {'+'.join(members)}; policy: "
          f"{'allow_confusable (lenient)' if section.allow_confusable else 'strict + accept_also'}; "
          f"threshold {section.lid_threshold} (+ clear majority), member_min_prob {section.member_min_prob}, "
          f"per-language settings from languages/*.toml")
    missing = [lang.code for lang in registry.generation if lang.code not in reporting]
    print(f"# Tatoeba: {len(covered)} languages, halves of <= {args.per_language} sentences (seed {args.seed}); "
          f"no Tatoeba file: {len(missing)}: {', '.join(missing)}")
    print(f"# accept_also languages (*; a neighbour accepted still counts as a false positive): "
          f"{', '.join(sorted(special)) or '-'}")

    if args.fit:
        print()
        print("Per-language settings fitted on the fitting half (None = the run default)")
        print()
        print("| lang | fitted lid_threshold | fitted lid_min_prob | in the file now | measurement |")
        print("|---|---|---|---|---|")
        for code in asked:
            if code in special:
                continue  # their neighbours are accepted by design
            threshold, min_prob, note = fit_language(judge, code, fitting, args, members)
            language = registry.get(code)
            now = (language.lid_threshold, language.lid_min_prob)
            if (threshold, min_prob) != (None, None) or now != (None, None):
                print(f"| {code} | {threshold} | {min_prob} | {now[0]} / {now[1]} | {note} |")
            if args.write and ((threshold, min_prob) != (None, None) or now != (None, None)):
                write_setting(registry.directory / f"{code}.toml", threshold, min_prob, note, args.seed)
        if args.write:
            print("\n(written; reload the registry and re-run without --fit to report)")
        return

    start = time.process_time()
    pools = reporting if args.half == "reporting" else fitting
    counts, pairs = measure(judge, pools, asked, deciders, args, args.long_chars)
    print(f"# {len(judge._votes):,} texts voted on by {'+'.join(every)} in {judge.seconds:.1f} CPU-s; "
          f"deciding {time.process_time() - start:.1f} CPU-s")
    print()
    print(f"## Long fields (Tatoeba sentences, {args.half} half): pooled k/n, % [95% CI]")
    print()
    print_decider_table(counts, deciders, scopes, args.long_chars)
    print()
    print("Confusable pairs (filter): the neighbour's sentences accepted as the asked language")
    print()
    print("| asked | neighbour | accepted |")
    print("|---|---|---|")
    for (code, neighbour), (k, n) in sorted(pairs.items()):
        print(f"| {code} | {neighbour}{'*' if neighbour in registry.accept_also(code) else ''} | {rate(k, n)} |")
    if args.per_language_table:
        print()
        print_per_language(counts["filter"], registry, args.long_chars)
    if args.share_table:
        print()
        print_share_table({c: v for c, v in counts["filter"].items() if c not in special}, registry)
    if args.short:
        short_fields(judge, pools, asked, deciders, args)
    if args.second_source:
        second_source_report(judge, args, members, registry)


def short_fields(judge: Judge, reporting, asked, deciders, args) -> None:
    registry = judge.registry
    ensemble = judge.ensemble
    before = _BeforeShortRule(ensemble.members, ensemble._label_of, registry, ensemble.weights, ensemble.threshold,
                              ensemble.member_min_prob, ensemble.allow_confusable, ensemble.max_chars)
    spaced = [c for c in asked if not registry.get(c).unspaced]  # no spaces: a "2-4-word" snippet is undefined
    needed = sorted(set(spaced) | {"en"} | {n for c in spaced for n in registry.confusables(c) if n in reporting})
    snippets = {c: [snippet(s, rng) for s in reporting[c][: args.english]]
                for c in needed for rng in [random.Random(f"{args.seed}-short-{c}")]}
    counts: dict[str, dict[str, Counts]] = defaultdict(lambda: defaultdict(Counts))
    for code in spaced:
        cases = [("positive", t) for t in snippets[code]]
        cases += [("english", t) for t in snippets["en"]] if code != "en" else []
        cases += [("neighbour", t) for n in sorted(registry.confusables(code)) if n in snippets
                  and n not in registry.accept_also(code) for t in snippets[n][: args.neighbours // 2]]
        for name, members in deciders.items():
            if name.endswith(" alone"):
                continue
            for kind, text in cases:
                counts[name][code].add(kind, judge.accepts(text, code, members))
                if name == "filter":
                    counts["filter, before (only a majority for another language rejects)"][code].add(
                        kind, judge.accepts(text, code, members, before))
    plain = [c for c in spaced if not registry.get(c).accept_also]
    print()
    print(f"## Short fields: 2-4-word snippets of the {args.half} half, {len(plain)} spaced languages without "
          "accept_also (neighbours in accept_also not counted); targets: right kept >= 90%, English <= 1%, "
          "neighbour <= 5%")
    print()
    print("| decider | right kept | English acc. | neighbour acc. |")
    print("|---|---|---|---|")
    for name in counts:
        total = pooled([counts[name][c] for c in plain])
        print(f"| {name} | " + " | ".join(rate(*total.get(k)) for k in ("positive", "english", "neighbour")) + " |")
    print()
    print("Per language (filter); languages missing a target are marked !")
    print()
    print("| lang | right kept | English acc. | neighbour acc. | before: right / English / neighbour |")
    print("|---|---|---|---|---|")
    misses = []
    before_name = next(name for name in counts if name.startswith("filter, before"))
    for code in plain:
        cell = counts["filter"][code]
        old = counts[before_name][code]
        was = " / ".join(_percent(*old.get(k)) for k in ("positive", "english", "neighbour"))
        (kr, nr), (ke, ne), (kn, nn) = cell.get("positive"), cell.get("english"), cell.get("neighbour")
        miss = [what for what, bad in (("right", nr and kr / nr < 0.9), ("English", ne and ke / ne > 0.01),
                                        ("neighbour", nn and kn / nn > 0.05)) if bad]
        if miss:
            misses.append(f"{code} ({', '.join(miss)})")
        print(f"| {code}{' !' if miss else ''} | {rate(kr, nr)} | {rate(ke, ne)} | {rate(kn, nn)} | {was} |")
    print()
    print(f"languages missing a short-field target: {len(misses)}: {'; '.join(misses) or '-'}")


def second_source_report(judge: Judge, args, members, registry: Registry) -> None:
    sources = second_source(args.data, 300 if not args.smoke else 20, args.seed)
    print()
    print("## Second source (never used for fitting; not Tatoeba): each text judged as a lone field")
    print()
    print("Right language kept, per source and language")
    print()
    print("| source | lang | right kept |")
    print("|---|---|---|")
    kept_total: dict[str, Counts] = defaultdict(Counts)
    per_language: dict[tuple[str, str], Counts] = defaultdict(Counts)  # (source, asked) -> counts
    for kind, by_code in sources.items():
        for code, texts in sorted(by_code.items()):
            if code not in registry:
                continue
            cell = Counts()
            for text in texts:
                verdict = judge.accepts(text, code, members)
                cell.add("positive", verdict)
                kept_total[kind].add("positive", verdict)
                per_language[(kind, code)].add("positive", verdict)
            print(f"| {kind} | {code} | {rate(*cell.get('positive'))} |")
    for kind, cell in kept_total.items():
        print(f"| {kind} | all (pooled) | {rate(*cell.get('positive'))} |")
    print()
    print("Wrong answers from the second source accepted: English texts asked as every other generation "
          "language; a neighbour's texts asked as each language of its confusable group (outside accept_also)")
    print()
    print("| source | asked | written in | accepted |")
    print("|---|---|---|---|")
    generation = [lang.code for lang in registry.generation]
    english_total: dict[str, Counts] = defaultdict(Counts)
    for kind, by_code in sources.items():
        texts = by_code.get("en", [])[: 100 if not args.smoke else 10]
        asked = [c for c in generation if c != "en"] if not args.smoke else ["sw", "de"]
        for code in asked:
            for text in texts:
                verdict = judge.accepts(text, code, members)
                english_total[kind].add("english", verdict)
                per_language[(kind, code)].add("english", verdict)
        if texts:
            print(f"| {kind} | {len(asked)} languages | en | {rate(*english_total[kind].get('english'))} |")
        for written, items in sorted(by_code.items()):
            if written not in registry:
                continue
            for code in sorted(registry.confusables(written)):
                if written in registry.accept_also(code) or code not in generation:
                    continue
                cell = Counts()
                for text in items:
                    cell.add("neighbour", judge.accepts(text, code, members))
                print(f"| {kind} | {code} | {written} | {rate(*cell.get('neighbour'))} |")
    print()
    print("Expected precision (%, conservative 95% interval) if this share of a language's answers is in English, "
          "from this source's own rates (right language kept, English texts of the same source accepted)")
    print()
    print("| source | lang | " + " | ".join(f"{int(100 * s)}% English" for s in SHARES) + " |")
    print("|---|---|" + "---|" * len(SHARES))
    for (kind, code), cell in sorted(per_language.items()):
        if cell.get("positive")[1] and cell.get("english")[1]:
            cells = [precision_at(cell.get("positive"), cell.get("english"), share) for share in SHARES]
            print(f"| {kind} | {code} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
