"""What each stage checks before its settings are saved to ``run.toml``.

A command resolves its config (:func:`workbench.runconfig.resolve_run_config`), then runs the
checks of the stages it is about to run, and only then writes ``run.toml``: a value that fails one
(a model folder that does not exist, a data folder, a DeepSpeed JSON, an LID model file) is one
line and exit 2, and ``run.toml`` keeps what it had, so the next command is not poisoned.

The checks only look at the disk (folders, small JSON files); they load no model and reach no
network. Each takes the whole run config (the plan's size check estimates the generation it would
cost) and ``pipeline``: True when ``workbench run`` evaluates ``[pipeline] eval_systems`` rather
than ``[eval] model``. Each stage's :class:`~workbench.runner.Stage` names its check (``check=checks.filter``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, WorkbenchError
from workbench.systems import BASE, BASE_AT_TRAINED_CONTRACT, MINILM, NAMED_MODELS


def plan(config: Any, pipeline: bool = False) -> None:
    """The languages exist and the plan stays within its size bound (see :mod:`workbench.plan`)."""
    from workbench.languages import load_registry
    from workbench.plan import check_plan_size, resolve_quotas

    registry = load_registry()
    quotas, _ = resolve_quotas(config.run, registry)
    check_plan_size(quotas, config, registry)


def generate(config: Any, pipeline: bool = False) -> None:
    """An endpoint other than the embedded server answers as an OpenAI-compatible API with this key
    (the stage's preflight, ``GET /models``: one request, nothing generated)."""
    import asyncio
    import os

    from workbench.generate.client import LLMClient

    section = config.generate
    if section.base_url == "local":
        return  # the embedded server is started (and checked) by the stage itself
    client = LLMClient(base_url=section.base_url, model=section.model, api_key=os.environ.get(section.api_key_env, ""),
                       timeout_s=section.timeout_s, max_retries=0, backoff_base_s=section.backoff_base_s,
                       backoff_max_s=section.backoff_max_s, mode="none", concurrency=1)

    async def preflight() -> None:
        try:
            await client.preflight()
        finally:
            await client.close()

    asyncio.run(preflight())


def filter(config: Any, pipeline: bool = False) -> None:  # noqa: A001 - the stage's name
    """LID model files named in ``[filter]`` exist."""
    section = config.filter
    for field, path in (("filter.lid176_path", section.lid176_path), ("filter.extra_fasttext_path", section.extra_fasttext_path)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"fastText LID model file not found ({field})", where=str(path),
                              fix="point it at an existing .bin/.ftz file")
    if "extra" in section.members and not section.extra_fasttext_path:
        raise ConfigError("member 'extra' needs filter.extra_fasttext_path", where="filter.members",
                          fix="set filter.extra_fasttext_path, or drop 'extra' from the members")


def train(config: Any, pipeline: bool = False) -> None:
    """A model to train exists as a model folder; the DeepSpeed settings parse."""
    from workbench.train.stage import check_backend

    section = config.train
    if not section.model:
        raise WorkbenchError("no model to train", where="train.model", fix="give --model PATH (a local model folder) or \"minilm\"")
    if section.model != MINILM:
        from workbench.encoder import inspect_model

        inspect_model(section.model)
    if section.deepspeed_config and not Path(section.deepspeed_config).expanduser().is_file():
        raise ConfigError("DeepSpeed JSON not found", where=section.deepspeed_config,
                          fix="give --deepspeed-config an existing JSON file, or leave it out for the repo's")
    check_backend(section)


def eval(config: Any, pipeline: bool = False) -> None:  # noqa: A001 - the stage's name
    """The data folders exist; the model to evaluate is a model folder (or minilm / bm25).

    ``workbench run`` evaluates ``[pipeline] eval_systems``: ``base`` and ``base@trained-contract`` are
    ``[train] model`` (checked here when train is not checked with it); ``trained`` (whose contract the
    latter borrows) does not exist yet. ``[eval] contract_from`` holds the contract it names.
    """
    targets = [config.eval, *(config.pipeline.eval_also if pipeline else [])]
    for target in targets:
        if target.data_dir and not Path(target.data_dir).expanduser().is_dir():
            raise ConfigError("data folder not found (eval.data_dir)", where=str(target.data_dir),
                              fix="give --data-dir an existing MIRACL-, BEIR-, XQuAD- or Tatoeba-layout folder")
    if pipeline:
        base = {BASE, BASE_AT_TRAINED_CONTRACT} & set(config.pipeline.eval_systems)
        if base and config.train.model not in (None, *NAMED_MODELS):
            check_model_folder(config.train.model, "train.model")
        return
    if config.eval.model not in NAMED_MODELS:
        check_model_folder(config.eval.model, "--model")
    if config.eval.contract_from:
        from workbench.encoder import CONTRACT_FILE

        if not (Path(config.eval.contract_from).expanduser() / CONTRACT_FILE).is_file():
            raise WorkbenchError(f"no {CONTRACT_FILE} to borrow", where=str(config.eval.contract_from),
                                 fix="give --contract-from a model folder the trainer exported (it carries the contract)")


def report(config: Any, pipeline: bool = False) -> None:
    """Tables and folders ``[report]`` names exist."""
    section = config.report
    for path in [*section.results, *([section.audit] if section.audit else [])]:
        if not Path(path).expanduser().is_file():
            raise ConfigError("table not found", where=str(path), fix="give an existing Parquet table (--results / --audit)")
    if section.reference_dir and not Path(section.reference_dir).expanduser().is_dir():
        raise ConfigError("reference folder not found (report.reference_dir)", where=str(section.reference_dir),
                          fix="give a folder with miracl_reference_v2.csv, or leave it out for the shipped references")


def check_model_folder(model: str, option: str) -> None:
    """``model`` is a folder an encoder can be built from: the workbench contract, a
    sentence-transformers folder, an HF ``config.json`` or a PEFT adapter (nothing is loaded)."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise WorkbenchError("model folder not found", where=str(folder),
                             fix=f"give {option} a folder with workbench_encoder.json, a sentence-transformers model "
                                 "or an HF config.json (or minilm / bm25)")
    markers = ("workbench_encoder.json", "modules.json", "config.json", "adapter_config.json")
    if not any((folder / name).is_file() for name in markers):
        raise WorkbenchError("not a model folder (no workbench_encoder.json, modules.json or config.json)",
                             where=str(folder), fix=f"point {option} at an exported model directory")
    for name in markers:
        if (folder / name).is_file():
            try:
                json.loads((folder / name).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise WorkbenchError(f"{name} is not valid JSON ({err})", where=str(folder / name),
                                     fix="restore the model folder") from None
