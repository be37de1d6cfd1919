"""The eval stage's targets: which mteb task, split, languages and data one ``[eval]`` section names.

MIRACL (hub, or a local folder in MIRACL's layout: labelled full or subset by its corpus size),
XQuAD / any BEIR folder (local files), Tatoeba (hub, or the local folder of bitext pairs). Each
builder returns a :class:`Target`: the task, per-language counts, dataset labels for the results
table, and where the data came from (``eval/data_sources.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import conditions
from workbench.errors import UnknownLanguageError, WorkbenchError, first_line
from workbench.languages import Registry
from workbench.run import file_sha256

log = logging.getLogger(__name__)

MIRACL_TASKS = {"full": "MIRACLRetrieval", "hard-negatives": "MIRACLRetrievalHardNegatives"}
MIRACL_SUBSET_TASK = "MIRACLRetrievalSubset"  # a local folder holding part of a language's corpus
# MIRACL v1.0 passages per language: mteb's MIRACLRetrieval descriptive statistics (dev
# num_samples minus the dev queries). A local corpus of another size is labelled a subset.
MIRACL_CORPUS_SIZES = {
    "ar": 2061414, "bn": 297265, "de": 15866222, "en": 32893221, "es": 10373953, "fa": 2207172,
    "fi": 1883509, "fr": 14636953, "hi": 506264, "id": 1446315, "ja": 6953614, "ko": 1486752,
    "ru": 9543918, "sw": 131924, "te": 518079, "th": 542166, "yo": 49043, "zh": 4934368,
}
# XQuAD (Artetxe et al. 2020): 240 paragraphs per language; a folder with fewer holds a subset.
XQUAD_PARAGRAPHS = 240


@dataclass
class Target:
    """One mteb task to run, with per-language counts and dataset labels for the results table."""

    task: Any
    task_name: str
    split: str
    datasets: dict[str, str]  # subset -> dataset label
    counts: dict[str, dict[str, int]]  # subset -> query/doc counts
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset label -> data source
    kind: str = conditions.RETRIEVAL  # conditions.TASK_KINDS
    languages: dict[str, str] = field(default_factory=dict)  # subset -> language column (default: subset)
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # subset -> qrels (mteb unloads its copy)
    benchmark: str = ""  # the EVAL_TASKS name ([eval] task)
    corpora: dict[str, str] = field(default_factory=dict)  # subset -> corpus variant (conditions.CORPORA)
    revisions: dict[str, str] = field(default_factory=dict)  # subset -> dataset revision

    def conditions(self, subset: str) -> dict[str, Any]:
        """The data conditions of one subset's rows (columns of EVAL_RESULTS)."""
        return {"benchmark": self.benchmark, "task_kind": self.kind, "corpus": self.corpora.get(subset),
                "revision": self.revisions.get(subset)}


def _local_source(data_dir: Path, files: list[Path], **info: Any) -> dict[str, Any]:
    """Where a local dataset came from: the folder and each file's sha256 (to match against other data)."""
    return {
        "origin": "local",
        "location": str(data_dir.resolve()),
        "files": {str(f.resolve().relative_to(data_dir.resolve())) if f.resolve().is_relative_to(data_dir.resolve()) else str(f): file_sha256(f) for f in files},
        **info,
    }


def local_revision(source: dict[str, Any]) -> str:
    """A local dataset's revision: the sha256 of its files' sha256s (any changed byte changes it)."""
    import hashlib

    digest = hashlib.sha256("\n".join(f"{name} {sha}" for name, sha in sorted(source["files"].items())).encode())
    return f"sha256:{digest.hexdigest()[:12]}"


def build_target(section: Any, registry: Registry) -> Target:
    """The target one ``[eval]`` section names (its ``task`` is a key of :data:`TARGETS`)."""
    target = TARGETS[section.task](section, registry)
    target.benchmark = section.task
    return target


def _local_files_target(section: Any, registry: Registry) -> Target:
    if section.data_dir is None:
        example = "../shared/data/xquad or examples/data/xquad" if section.task == "xquad" else "a BEIR folder"
        raise WorkbenchError(
            f"task '{section.task}' reads local files", where="--data-dir", fix=f"give --data-dir ({example})"
        )
    return _beir_target(section, registry)


def _miracl_target(section: Any, registry: Registry) -> Target:
    from workbench.eval.local_tasks import MIRACL_INSTRUCTION, build_local_task, load_miracl_split

    miracl_codes = [lang.code for lang in registry.miracl]
    for code in section.languages:
        registry.get(code)  # unknown code: one line with a suggestion
        if code not in miracl_codes:
            raise UnknownLanguageError(
                f"'{code}' is not a MIRACL language", where="--languages", fix=f"MIRACL has {' '.join(miracl_codes)}"
            )
    split = section.split or "dev"
    task_name = MIRACL_TASKS[section.corpus]
    suffix = "full" if section.corpus == "full" else "hardneg"
    if section.data_dir is not None:
        data_dir = Path(section.data_dir)
        if not data_dir.is_dir():
            raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a MIRACL-format folder")
        languages = section.languages or [
            c for c in miracl_codes
            if any((data_dir / p).is_file() for p in (f"corpus/{c}/corpus.jsonl.gz", f"corpus/{c}/corpus.jsonl", f"{c}/corpus.jsonl.gz", f"{c}/corpus.jsonl"))
        ]
        if not languages:
            raise WorkbenchError("no MIRACL language has a corpus here", where=str(data_dir), fix="expected corpus/<lang>/corpus.jsonl[.gz]")
        splits = {code: load_miracl_split(data_dir, code, split) for code in languages}
        # a local folder is evaluated as it is: its labels name the corpus it holds (the full
        # MIRACL corpus of a language, or part of it), whatever --hard-negatives/--full said
        variants = {
            c: "full" if len(s.corpus) == MIRACL_CORPUS_SIZES.get(c) else f"subset{len(s.corpus)}" for c, s in splits.items()
        }
        task_name = MIRACL_TASKS["full"] if all(v == "full" for v in variants.values()) else MIRACL_SUBSET_TASK
        if section.corpus == "hard-negatives":
            log.info("%s holds %s corpora: labelled %s (the hard-negatives corpus comes from the hub)", data_dir,
                     ", ".join(f"{c} {v}" for c, v in variants.items()), task_name)
        task = build_local_task(
            task_name,
            splits,
            eval_langs={c: [_lang_tag(registry, c)] for c in languages},
            data_dir=data_dir,
            split=split,
            instruction=MIRACL_INSTRUCTION,
        )
        counts = {c: s.stats for c, s in splits.items()}
        datasets = {c: f"miracl-{c}-{split}-{variants[c]}" for c in languages}
        sources = {
            datasets[c]: _local_source(data_dir, s.files, task=task_name, corpus=variants[c], docs=len(s.corpus),
                                       full_corpus_docs=MIRACL_CORPUS_SIZES.get(c))
            for c, s in splits.items()
        }
        return Target(task, task_name, split, datasets, counts, sources, qrels={c: s.qrels for c, s in splits.items()},
                      corpora={c: conditions.FULL if v == "full" else conditions.SUBSET for c, v in variants.items()},
                      revisions={c: local_revision(sources[datasets[c]]) for c in languages})
    return _hub_target(task_name, section.languages or miracl_codes, split, registry, suffix)


def _load_from_hub(task: Any, *, where: str, fix: str) -> None:
    """``task.load_data()``; any failure becomes one WorkbenchError line naming the dataset and the fix."""
    try:
        task.load_data()
    except Exception as err:  # datasets/huggingface_hub raise many types when offline; one line names the fix
        first = first_line(err, 160)
        raise WorkbenchError(
            f"cannot load {task.metadata.dataset['path']} from the Hugging Face hub ({type(err).__name__}: {first})",
            where=where,
            fix=fix,
        ) from None


def _hub_target(task_name: str, languages: list[str], split: str, registry: Registry, suffix: str) -> Target:
    import mteb

    task = mteb.get_task(task_name, languages=[registry.get(c).iso639_3 for c in languages])
    _load_from_hub(task, where=task_name, fix="check the network / HF_HUB_OFFLINE, or evaluate a local copy with --data-dir DIR")
    counts: dict[str, dict[str, int]] = {}
    all_qrels: dict[str, dict[str, dict[str, int]]] = {}
    for subset in task.hf_subsets:
        data = task.dataset[subset][split]
        qrels = all_qrels[subset] = {q: dict(docs) for q, docs in data["relevant_docs"].items()}
        qids = list(data["queries"]["id"])
        counts[subset] = {
            "queries_total": len(qids),
            "queries_without_qrels": sum(1 for q in qids if not qrels.get(q)),
            "queries_without_positives": sum(1 for q in qids if qrels.get(q) and not any(v > 0 for v in qrels[q].values())),
            "docs": len(data["corpus"]),
        }
    datasets = {s: f"miracl-{s}-{split}-{suffix}" for s in task.hf_subsets}
    sources = {
        datasets[s]: {"origin": "hub", "location": task.metadata.dataset["path"], "revision": task.metadata.dataset.get("revision"),
                      "task": task_name, "corpus": "full" if suffix == "full" else "hard-negatives"}
        for s in task.hf_subsets
    }
    revision = str(task.metadata.dataset.get("revision") or conditions.NOT_STATED)
    corpus = conditions.FULL if suffix == "full" else conditions.HARD_NEGATIVES_V1  # mteb's v1 task
    return Target(task, task_name, split, datasets, counts, sources, qrels=all_qrels,
                  corpora={s: corpus for s in task.hf_subsets}, revisions={s: revision for s in task.hf_subsets})


def _tatoeba_target(section: Any, registry: Registry) -> Target:
    """mteb's Tatoeba bitext mining, xxx -> English, for the languages asked (default: all there)."""
    from workbench.eval import bitext

    split = section.split or "test"
    if split != "test":
        raise WorkbenchError(f"Tatoeba has no '{split}' split", where="--split", fix="use test (the default)")
    wanted: dict[str, str] = {}  # Tatoeba code -> workbench code
    by_tatoeba = {lang.tatoeba: lang.code for lang in registry if lang.tatoeba}
    for code in section.languages:
        lang = registry.get(code)  # unknown code: one line with a suggestion
        if code == "en":
            raise UnknownLanguageError("English is the target side of every Tatoeba pair", where="--languages", fix="name the other languages, e.g. -l de,sw")
        if not lang.tatoeba:
            raise UnknownLanguageError(f"'{code}' has no Tatoeba test set", where="--languages",
                                       fix="see the tatoeba column of `workbench languages`")
        wanted[lang.tatoeba] = code
    if section.data_dir is None:
        codes = list(wanted) or sorted(by_tatoeba)
        task = bitext.hub_tatoeba(codes)
        _load_from_hub(task, where=bitext.TASK,
                       fix="check the network / HF_HUB_OFFLINE, or evaluate a local LASER-layout copy with --data-dir DIR")
        subsets = {f"{c}-eng": c for c in codes if f"{c}-eng" in task.hf_subsets}
        counts = {s: {"pairs": len(task.dataset[s][split]), "queries_total": len(task.dataset[s][split]), "docs": len(task.dataset[s][split])} for s in subsets}
        datasets = {s: f"tatoeba-{s}" for s in subsets}
        sources = {datasets[s]: {"origin": "hub", "location": task.metadata.dataset["path"], "revision": task.metadata.dataset.get("revision"),
                                 "task": bitext.TASK, "pairs": counts[s]["pairs"]} for s in subsets}
        languages = {s: by_tatoeba.get(c, c) for s, c in subsets.items()}
        revision = str(task.metadata.dataset.get("revision") or conditions.NOT_STATED)
        return Target(task, bitext.TASK, split, datasets, counts, sources, kind=conditions.BITEXT, languages=languages,
                      corpora={s: conditions.FULL for s in subsets}, revisions={s: revision for s in subsets})
    data_dir = Path(section.data_dir)
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a LASER-layout Tatoeba folder")
    present = bitext.available_pairs(data_dir)
    if not present:
        raise WorkbenchError("no tatoeba.<xxx>-eng.<xxx> / .eng file pair here", where=str(data_dir), fix="point --data-dir at a LASER-layout Tatoeba folder")
    for code, lang in wanted.items():
        if code not in present:
            raise UnknownLanguageError(f"no Tatoeba data for '{lang}' ({code})", where=str(data_dir),
                                       fix=f"this folder has {' '.join(by_tatoeba.get(c, c) for c in present)}")
    pairs = [bitext.load_laser_pair(data_dir, c) for c in (list(wanted) or present)]
    variants = {p.code: "" if len(p.sentences) == bitext.published_pairs(p.code) else f"-subset{len(p.sentences)}" for p in pairs}
    task_name = bitext.TASK if not any(variants.values()) else bitext.SUBSET_TASK
    task = bitext.build_local_tatoeba(data_dir, pairs, task_name=task_name)
    datasets = {p.hf_subset: f"tatoeba-{p.hf_subset}{variants[p.code]}" for p in pairs}
    counts = {p.hf_subset: {"pairs": len(p.sentences), "queries_total": len(p.sentences), "docs": len(p.english)} for p in pairs}
    sources = {
        datasets[p.hf_subset]: _local_source(data_dir, p.files, task=task_name, pairs=len(p.sentences),
                                             published_pairs=bitext.published_pairs(p.code))
        for p in pairs
    }
    languages = {p.hf_subset: by_tatoeba.get(p.code, p.code) for p in pairs}
    return Target(task, task_name, split, datasets, counts, sources, kind=conditions.BITEXT, languages=languages,
                  corpora={p.hf_subset: conditions.SUBSET if variants[p.code] else conditions.FULL for p in pairs},
                  revisions={p.hf_subset: local_revision(sources[datasets[p.hf_subset]]) for p in pairs})


def _beir_target(section: Any, registry: Registry) -> Target:
    from workbench.encoder import task_instructions
    from workbench.eval.local_tasks import build_local_task, load_beir_split

    data_dir = Path(section.data_dir)
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a BEIR-layout folder")
    split = section.split or "test"
    if (data_dir / "corpus.jsonl").is_file() or (data_dir / "corpus.jsonl.gz").is_file():
        folders = {section.languages[0] if section.languages else data_dir.name: data_dir}
    else:
        available = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and any(p.glob("corpus.jsonl*")))
        if not available:
            raise WorkbenchError("no corpus.jsonl here or in any subfolder", where=str(data_dir), fix="point --data-dir at a BEIR-layout folder")
        wanted = section.languages or available
        for code in wanted:
            if code not in available:
                raise UnknownLanguageError(
                    f"no data for language '{code}'", where=str(data_dir), fix=f"this folder has {' '.join(available)}"
                )
        folders = {code: data_dir / code for code in wanted}
    # a BEIR folder is its own task, named after the folder ("BEIR-scifact"); one instruction for all
    folder_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data_dir.resolve().name)
    task_name = "XQuADRetrieval" if section.task == "xquad" else f"BEIR-{folder_name}"
    prefix = "xquad" if section.task == "xquad" else f"beir-{folder_name}"
    splits = {code: load_beir_split(folder, code, split) for code, folder in folders.items()}
    instructions = task_instructions()
    task = build_local_task(
        task_name,
        splits,
        eval_langs={c: [_lang_tag(registry, c)] for c in splits},
        data_dir=data_dir,
        split=split,
        instruction=instructions.get(task_name, instructions.get("BEIRRetrieval")),
    )
    datasets = {c: (f"{prefix}-{c}" if c != data_dir.name else prefix) for c in splits}
    sources = {datasets[c]: _local_source(data_dir, s.files, task=task_name, docs=len(s.corpus)) for c, s in splits.items()}
    if section.task == "xquad":  # XQuAD has a published size; any other BEIR folder is its own corpus
        corpora = {c: conditions.FULL if len(s.corpus) == XQUAD_PARAGRAPHS else conditions.SUBSET for c, s in splits.items()}
    else:
        corpora = {c: conditions.LOCAL for c in splits}
    return Target(task, task_name, split, datasets, {c: s.stats for c, s in splits.items()}, sources,
                  qrels={c: s.qrels for c, s in splits.items()}, corpora=corpora,
                  revisions={c: local_revision(sources[datasets[c]]) for c in splits})


def _passkey_target(section: Any, registry: Registry) -> Target:
    from workbench.eval import passkey

    return passkey.build_target(section, registry)


def _lang_tag(registry: Registry, code: str) -> str:
    """mteb language tag (ISO 639-3 + script), e.g. yor-Latn; eng-Latn for folder names that are not codes."""
    if code in registry:
        lang = registry.get(code)
        script = "Hans" if lang.scripts[0] == "Hani" else lang.scripts[0]
        return f"{lang.iso639_3}-{script}"
    log.info("subset '%s' is not a language code; tagging it eng-Latn for mteb", code)
    return "eng-Latn"


# Every eval task, declared once: ``[eval] task`` / ``--task`` / ``[[pipeline.eval_also]] task``
# accept exactly these names (workbench/config.py reads them from here).
TARGETS: dict[str, Callable[[Any, Registry], Target]] = {
    "miracl": _miracl_target,
    "xquad": _local_files_target,
    "beir": _local_files_target,
    "tatoeba": _tatoeba_target,
    "passkey": _passkey_target,
}
EVAL_TASKS: tuple[str, ...] = tuple(TARGETS)
