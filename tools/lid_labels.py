"""Add an LID member's label column to every language file (``[lid]`` in ``languages/*.toml``).

For each language: the member's label is the registry code when the installed model emits it,
else a known alias (ISO 639 codes some models still use: he = iw, tl = fil, no = nb, ...), else
``"unsupported"`` (the member abstains for that language). The line goes at the end of the
``[lid]`` table and the ``[sources] lid`` line names where the labels were read. Files that
already have the column are left as they are. Prints what it wrote, per label kind.

Run:  PYTHONPATH=. python tools/lid_labels.py lingua [--languages DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.filter.members import MEMBERS, UNSUPPORTED  # noqa: E402

# Older or narrower ISO 639 codes a model may use for a registry language.
ALIASES = {"he": ("iw",), "tl": ("fil",), "no": ("nb",), "yi": ("ji",), "jv": ("jw",), "id": ("in",)}
SOURCES = {
    "lingua": "lingua: lingua.Language.all(), ISO 639-1 codes",
    "cld3": "cld3: the output-code table of the cld3-py wheel",
}


def label_for(code: str, known: set[str]) -> str:
    for candidate in (code, *ALIASES.get(code, ())):
        if candidate in known:
            return candidate
    return UNSUPPORTED


def add_column(path: Path, member: str, known: set[str]) -> str | None:
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    if member in data.get("lid", {}):
        return None
    label = label_for(data["code"], known)
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "[lid]")
    end = start + 1
    while end < len(lines) and lines[end].strip() and not lines[end].startswith("["):
        end += 1
    lines.insert(end, f'{member} = "{label}"\n')
    text = "".join(lines)
    source = SOURCES.get(member, f"{member}: {MEMBERS[member].__name__}.known_labels()")
    text = re.sub(r'(?m)^(lid = ".*?)"$', lambda m: f'{m.group(1)}; {source}"', text, count=1)
    path.write_text(text, encoding="utf-8")
    return label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("member", choices=[name for name, cls in MEMBERS.items() if cls.label_field])
    parser.add_argument("--languages", type=Path, default=REPO / "languages")
    args = parser.parse_args()
    known = MEMBERS[args.member].known_labels()
    written: dict[str, list[str]] = defaultdict(list)
    for path in sorted(args.languages.glob("*.toml")):
        label = add_column(path, args.member, known)
        if label is not None:
            code = path.stem
            kind = "unsupported" if label == UNSUPPORTED else ("same code" if label == code else f"alias {label}")
            written[kind].append(code)
    for kind, codes in written.items():
        print(f"{args.member}: {kind}: {len(codes)}: {' '.join(codes)}")


if __name__ == "__main__":
    main()
