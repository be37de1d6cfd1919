"""Tokens per word per script (the table behind workbench/generate/budget.py), and the budgets.

Tokenises up to ``--sentences`` Tatoeba sentences per registry language with SmolLM2-135M's
tokenizer (the GGUF of the embedded server, vocabulary only) and with OpenAI's o200k_base (GPT-4o;
from the ``bpe-openai`` package, which ships the vocabulary, if it is importable: it is not a
dependency of the workbench), and counts words as the filter does (whitespace words; characters /
1.5 for unspaced scripts). Prints tokens per word, the median language per script, next to the
tables in ``workbench/generate/budget.py``, then the completion budget a request gets per family
and script, before (a flat 1,024) and after (sized, before capping), and the dry run's
per-example estimate (before: a flat 360).

    pip install --target /tmp/bpeo bpe-openai==0.1.4     # optional, for the o200k column
    PYTHONPATH=.:/tmp/bpeo python benchmarks/generation_budget.py --data ../shared/data --sentences 2000
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from workbench.generate import budget
from workbench.languages import load_registry


def _tokenizers() -> dict[str, object]:
    import llama_cpp

    from workbench.generate.local import gguf_path

    smollm2 = llama_cpp.Llama(str(gguf_path()), vocab_only=True, verbose=False)
    found = {"smollm2": lambda text: len(smollm2.tokenize(text.encode("utf-8"), add_bos=False))}
    try:
        import bpe_openai

        o200k = bpe_openai.get_encoding("o200k_base")
        found["o200k"] = lambda text: len(o200k.encode(text))
    except ImportError:
        pass
    return found


def measure(data: Path, sentences: int, count) -> dict[str, list[tuple[str, float]]]:
    per_script: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for language in load_registry():
        path = data / "tatoeba" / f"tatoeba.{language.tatoeba}-eng.{language.tatoeba}"
        if not language.tatoeba or not path.is_file():
            continue
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:sentences]
        text = "\n".join(lines)
        words = len(text) / 1.5 if language.unspaced else len(text.split())
        tokens = count(text)
        per_script[language.scripts[0]].append((language.code, tokens / max(1.0, words)))
    return per_script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny sizes: checks the script runs (no figures)")
    args = parser.parse_args()
    if args.smoke:
        args.sentences = 20
    tables = {"smollm2": budget.TOKENS_PER_WORD, "o200k": budget.TOKENS_PER_WORD_O200K}
    for name, count in _tokenizers().items():
        per_script = measure(Path(args.data), args.sentences, count)
        print(f"\n{name}: tokens per word")
        print("| script | languages | min | median | max | table (budget.py) |")
        print("|---|---:|---:|---:|---:|---:|")
        for script, values in sorted(per_script.items()):
            rates = [rate for _, rate in values]
            print(f"| {script} | {len(values)} | {min(rates):.2f} | {statistics.median(rates):.2f} | {max(rates):.2f} "
                  f"| {tables[name].get(script, float('nan')):.1f} |")
    registry = load_registry()
    samples = {"Latn": "de", "Cyrl": "ru", "Arab": "ar", "Deva": "hi", "Telu": "te", "Ethi": "am", "Jpan": "ja"}
    slots = {
        "short_long (num_words 500)": ("short_long", {"num_words": "500"}),
        "short_long (num_words 50)": ("short_long", {"num_words": "50"}),
        "long_short (at least 200)": ("long_short", {"num_words": "at least 200"}),
        "short_short": ("short_short", {}),
        "long_long": ("long_long", {}),
        "sts (passage)": ("sts", {"unit": "passage"}),
        "bitext (sentence, to en)": ("bitext", {"unit": "sentence"}),
    }
    english = registry.get("en")
    for title, table in (("SmolLM2 table (embedded server)", budget.TOKENS_PER_WORD),
                         ("o200k table (every other endpoint)", budget.TOKENS_PER_WORD_O200K)):
        print(f"\n{title}: max_tokens per request before capping (before: 1024 for every request) | "
              "dry-run estimate (before: 360)")
        print("| family | " + " | ".join(samples) + " |")
        print("|---|" + "---:|" * len(samples))
        for row_title, (family, slot) in slots.items():
            cells = []
            for code in samples.values():
                language = registry.get(code)
                target = english if family == "bitext" else None
                cells.append(f"{budget.completion_budget(family, slot, language, target, table)} / "
                             f"{budget.expected_completion_tokens(family, slot, language, target, table)}")
            print(f"| {row_title} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
